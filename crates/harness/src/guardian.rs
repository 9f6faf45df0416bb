//! Stops the processes a test binary started, however it ends (normal exit, panic, or kill).
//!
//! A tiny shell process reads child pids from a pipe. The test binary never closes its end; the
//! kernel does when the binary exits, and then the guardian kills the children and removes the
//! scratch directory. Statics are never dropped, so no destructor could do this. It ignores
//! Ctrl-C and SIGTERM, which a terminal or `timeout` sends to the whole process group: only the
//! closing pipe ends it, so it always gets to clean up.

use std::{
    io::Write,
    path::Path,
    process::{ChildStdin, Command, Stdio},
    sync::Mutex,
};

const SCRIPT: &str = r#"
trap '' INT TERM HUP
pids=""
while read -r pid; do pids="$pids $pid"; done
[ -n "$pids" ] && kill $pids 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do
  alive=""
  for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
  [ -z "$alive" ] && break
  sleep 0.5
done
[ -n "$alive" ] && kill -9 $alive 2>/dev/null
rm -rf "$1"
"#;

pub struct Guardian {
    pipe: Mutex<ChildStdin>,
}

impl Guardian {
    /// Starts a guardian that will remove `scratch` once everything it watches is stopped.
    pub fn start(scratch: &Path) -> Guardian {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("guardian")
            .arg(scratch)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start guardian shell");
        let pipe = child.stdin.take().expect("guardian stdin");
        // The guardian outlives this handle on purpose; it reaps itself when the pipe closes.
        std::mem::forget(child);
        Guardian {
            pipe: Mutex::new(pipe),
        }
    }

    /// Hands a process to the guardian, to be stopped when the test binary exits.
    pub fn watch(&self, pid: u32) {
        let mut pipe = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(pipe, "{pid}").expect("write pid to guardian");
        pipe.flush().expect("flush guardian pipe");
    }
}
