module example.com/cnet

go 1.19
