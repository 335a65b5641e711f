package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Config says how to start instances.
type Config struct {
	Exe         string    // the program to run; it must call RunInstance when IsInstance
	Args        []string  // its arguments
	DatabaseURL string    // where every instance's pool connects
	Table       string    // the session table they share
	Key         []byte    // the cookie hash key they share (>= 32 bytes)
	Stderr      io.Writer // where the instances' diagnostics go; nil discards
}

// Process is a running instance.
type Process struct {
	Addr  string // host:port it serves on
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// Start starts n instances and waits until each one listens.
func Start(cfg Config, n int) ([]*Process, error) {
	var ps []*Process
	for range n {
		p, err := start(cfg)
		if err != nil {
			_ = Stop(ps)
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func start(cfg Config) (*Process, error) {
	cmd := exec.Command(cfg.Exe, cfg.Args...)
	cmd.Env = append(os.Environ(),
		envInstance+"=1",
		envURL+"="+cfg.DatabaseURL,
		envTable+"="+cfg.Table,
		envKey+"="+string(cfg.Key),
	)
	cmd.Stderr = cfg.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, stdin: stdin}
	type result struct {
		addr string
		err  error
	}
	rc := make(chan result, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, err := br.ReadString('\n')
		var addr string
		if err == nil {
			_, err = fmt.Sscanf(line, "LISTENING %s", &addr)
		}
		rc <- result{addr, err}
		_, _ = io.Copy(io.Discard, br) // keep the pipe drained
	}()
	select {
	case r := <-rc:
		if r.err != nil {
			_ = p.stop()
			return nil, fmt.Errorf("instance did not start: %w", r.err)
		}
		p.Addr = r.addr
		return p, nil
	case <-time.After(30 * time.Second):
		_ = p.stop()
		return nil, errors.New("instance did not start within 30s")
	}
}

// Stop asks every instance to exit (by closing its standard input), waits
// for each, and reports any that had to be killed, failed, or is still
// there afterwards.
func Stop(ps []*Process) error {
	var errs []error
	for _, p := range ps {
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *Process) stop() error {
	_ = p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
		if err != nil {
			err = fmt.Errorf("instance %s (pid %d) exited: %w", p.Addr, p.cmd.Process.Pid, err)
		}
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
		err = fmt.Errorf("instance %s (pid %d) did not exit within 15s and was killed", p.Addr, p.cmd.Process.Pid)
	}
	// Reaped by Wait, the pid must be gone.
	if kerr := syscall.Kill(p.cmd.Process.Pid, 0); !errors.Is(kerr, syscall.ESRCH) {
		err = errors.Join(err, fmt.Errorf("instance pid %d is still there after exiting", p.cmd.Process.Pid))
	}
	return err
}
