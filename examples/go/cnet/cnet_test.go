package cnet

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
)

// 64 goroutines at once, each in its own namespace, while the runtime moves
// them between OS threads: every call must act in its handle's namespace.
func TestParallelNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces)")
	}
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("cn-exg-%d-%d", os.Getpid(), i)
			defer DeleteNetNs(name)
			ns, err := CreateNetNs(name)
			if err != nil {
				errs <- err
				return
			}
			defer ns.Close()
			h, err := NewHandle(ns)
			if err != nil {
				errs <- err
				return
			}
			defer h.Close()
			runtime.Gosched()
			if err := h.LinkAdd(LinkConfig{Kind: LinkBridge, Name: "br0", Up: true}); err != nil {
				errs <- err
				return
			}
			// A different subnet per namespace: a call landing in another
			// goroutine's namespace would see the wrong device or none.
			cidr := fmt.Sprintf("10.%d.%d.1/24", 100+i/200, i%200)
			if err := h.AddrAdd("br0", cidr); err != nil {
				errs <- err
				return
			}
			for k := 0; k < 20; k++ {
				runtime.Gosched()
				l, err := h.RouteLookup(fmt.Sprintf("10.%d.%d.7", 100+i/200, i%200))
				if err != nil {
					errs <- err
					return
				}
				if l.Dev != "br0" || l.PrefSrc != fmt.Sprintf("10.%d.%d.1", 100+i/200, i%200) {
					errs <- fmt.Errorf("goroutine %d: lookup %v", i, l)
					return
				}
			}
			// The same bridge again: a typed error with the kernel's errno.
			err = h.LinkAdd(LinkConfig{Kind: LinkBridge, Name: "br0"})
			var e *Error
			if !errors.As(err, &e) || e.Code != AlreadyExists || e.Errno != 17 {
				errs <- fmt.Errorf("goroutine %d: want AlreadyExists/EEXIST, got %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestErrorsKeepCodeAndText(t *testing.T) {
	_, err := OpenNetNsPath("/nonexistent/ns")
	var e *Error
	if !errors.As(err, &e) || e.Code != NotFound || e.Message == "" {
		t.Fatalf("want NotFound with a message, got %#v", err)
	}
	_, err = OpenNetNsPath("bad\xff")
	if !errors.As(err, &e) || e.Code != InvalidUTF8 {
		t.Fatalf("want InvalidUTF8, got %#v", err)
	}
}
