module example.com/cnet-cni-plugin

go 1.19

require example.com/cnet v0.0.0

// The binding over libcnet, from this repository (no download).
replace example.com/cnet => ../go
