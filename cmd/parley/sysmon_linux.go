package main

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// restartWithQuietSysmon replaces the process with itself, same pid, same
// arguments and open files, with sysmonSetting in GODEBUG: the runtime
// reads that setting only when it starts. It returns only when no restart
// is needed or exec failed; the server then runs as it is.
// /proc/self/exe is the running binary even if its file was replaced or
// deleted since (an upgrade in place).
func restartWithQuietSysmon(stderr io.Writer) {
	env, restart := quietSysmonEnv(os.Environ())
	if !restart {
		return
	}
	err := syscall.Exec("/proc/self/exe", os.Args, env)
	fmt.Fprintf(stderr, "parley: could not restart with GODEBUG=%s, running without it (more CPU per packet): %v\n", sysmonSetting, err)
}
