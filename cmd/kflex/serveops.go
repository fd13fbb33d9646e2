package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kflex-go/kflex/serve"
)

// opsFlags are kflex serve's flags for operating it: its log, its metrics
// and its socket's permissions.
type opsFlags struct {
	metrics    string // host:port for /metrics, or ""
	level      slog.Level
	json       bool
	socketMode os.FileMode
}

func addOpsFlags(fs *flag.FlagSet) *opsFlags {
	o := &opsFlags{}
	fs.Func("metrics", "serve Prometheus metrics at http://ADDR/metrics (ADDR: host:port, e.g. 127.0.0.1:9464)", func(v string) error {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return fmt.Errorf("%q: want host:port: %v", v, err)
		}
		o.metrics = v
		return nil
	})
	fs.Func("log-level", "least level logged: debug, info, warn or error (default info)", func(v string) error {
		if err := o.level.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("%q: want debug, info, warn or error", v)
		}
		return nil
	})
	fs.Func("log-format", "log lines as text or json (default text), to stderr", func(v string) error {
		switch v {
		case "text", "json":
			o.json = v == "json"
			return nil
		}
		return fmt.Errorf("%q: want text or json", v)
	})
	fs.Func("socket-mode", "the socket's permissions, in octal (e.g. 0660; default: 0777 less the umask); it never has wider ones", func(v string) error {
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil {
			return fmt.Errorf("%q: want an octal mode such as 0660", v)
		}
		if err := serve.CheckSocketMode(os.FileMode(m)); err != nil || m == 0 {
			return fmt.Errorf("%q: want a mode from 0600 to 0777 that gives the owner read and write permission", v)
		}
		o.socketMode = os.FileMode(m)
		return nil
	})
	return o
}

// logger is the runtime's logger, writing to w.
func (o *opsFlags) logger(w io.Writer) *slog.Logger {
	ho := &slog.HandlerOptions{Level: o.level}
	if o.json {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// startMetrics, with --metrics, makes a registry for the runtime's metrics
// (and Go's and the process's) and serves it; stop ends the server.
func (o *opsFlags) startMetrics(log *slog.Logger) (reg *prometheus.Registry, stop func(), err error) {
	if o.metrics == "" {
		return nil, func() {}, nil
	}
	ln, err := net.Listen("tcp", o.metrics)
	if err != nil {
		return nil, nil, fmt.Errorf("serve: metrics on %s: %w", o.metrics, err)
	}
	reg = prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return reg, func() {
		srv.Close()
		<-done
	}, nil
}
