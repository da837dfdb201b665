//! A running worker: started once per command and kept for the following cases (a Python worker's
//! imports and compiled kernels are expensive), restarted after a crash, a timeout or a garbled
//! answer.
//!
//! Process hygiene: the worker runs in its own process group, so killing it also kills what it started
//! (torch.compile's compile workers); and it gets SIGKILL when the process that started it dies
//! (`PR_SET_PDEATHSIG`), so when the suite runner kills an `attnbench worker` at a timeout, the Python
//! child goes with it instead of sleeping on as an orphan.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::protocol::{hello, InputsMode, Reply, PREFIX, PROTOCOL};
use crate::child::{describe_exit, LineChild, Recv};

/// Why talking to a worker failed; each becomes a row status (see `Failure::status`).
#[derive(Debug, Clone)]
pub enum Failure {
    /// No answer before the case's deadline (`measure.timeout_s`).
    Timeout,
    /// The worker exited or closed its stdout; the message says how.
    Died(String),
    /// An answer line that is not a valid protocol message, or one for another request.
    Garbage(String),
    /// The worker could not be started, or its handshake was refused.
    Start(String),
}

/// What the worker said in the handshake.
#[derive(Debug, Clone)]
pub struct Hello {
    pub name: String,
    pub version: String,
    pub inputs: InputsMode,
    pub available: bool,
    pub reason: String,
}

pub struct WorkerProcess {
    child: LineChild,
    pub hello: Hello,
}

impl WorkerProcess {
    /// Starts `argv` with `env` added (own process group, SIGKILL when its parent dies; see
    /// `crate::child`) and completes the version handshake by `deadline`.
    pub fn start(argv: &[String], env: &[(String, String)], deadline: Instant) -> Result<WorkerProcess, Failure> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).envs(env.iter().map(|(k, v)| (k, v)));
        let child = LineChild::spawn(cmd, PREFIX, libc::SIGKILL).map_err(|e| Failure::Start(format!("cannot start `{}`: {e}", argv.join(" "))))?;
        let placeholder = Hello { name: String::new(), version: String::new(), inputs: InputsMode::Seed, available: false, reason: String::new() };
        let mut w = WorkerProcess { child, hello: placeholder };
        match w.exchange(&hello(), deadline) {
            Ok(Reply::Hello { protocol, name, version, inputs, available, reason }) => {
                if protocol != PROTOCOL {
                    let msg = format!("the worker speaks protocol {protocol}, this attnbench speaks {PROTOCOL}");
                    w.kill();
                    return Err(Failure::Start(msg));
                }
                w.hello = Hello { name, version, inputs, available, reason };
                Ok(w)
            }
            Ok(other) => {
                w.kill();
                Err(Failure::Garbage(format!("expected a hello answer, got {other:?}")))
            }
            Err(f) => {
                let f = w.explain(f);
                w.kill();
                Err(f)
            }
        }
    }

    /// Sends `request` and waits for its answer until `deadline`.
    pub fn request(&mut self, request: &Value, deadline: Instant) -> Result<Reply, Failure> {
        let reply = self.exchange(request, deadline).map_err(|f| self.explain(f))?;
        let want = request.get("id").and_then(Value::as_str);
        if reply.id().is_some() && reply.id() != want {
            return Err(Failure::Garbage(format!("answer for request {:?} while waiting for {want:?}", reply.id())));
        }
        Ok(reply)
    }

    fn exchange(&mut self, request: &Value, deadline: Instant) -> Result<Reply, Failure> {
        if self.child.send_line(&request.to_string()).is_err() {
            return Err(Failure::Died("the worker closed its stdin".into()));
        }
        match self.child.recv(deadline.saturating_duration_since(Instant::now())) {
            Recv::Line(json) => serde_json::from_str::<Reply>(&json).map_err(|e| {
                let shown: String = json.chars().take(120).collect();
                Failure::Garbage(format!("unreadable answer from the worker ({e}): {shown}"))
            }),
            Recv::Eof => Err(Failure::Died(String::new())),
            Recv::Timeout => Err(Failure::Timeout),
        }
    }

    /// Adds the exit status and the last stderr lines to a `Died` failure.
    fn explain(&mut self, f: Failure) -> Failure {
        match f {
            Failure::Died(_) => {
                let how = format!("worker {}", describe_exit(self.child.exit_status(Duration::from_secs(2))));
                let tail = self.child.stderr_tail();
                Failure::Died(if tail.is_empty() { how } else { format!("{how}; stderr: {tail}") })
            }
            other => other,
        }
    }

    /// The last three non-empty lines the worker wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.child.stderr_tail()
    }

    fn alive(&mut self) -> bool {
        self.child.alive()
    }

    /// Kills the worker's whole process group and reaps it.
    pub fn kill(&mut self) {
        self.child.stop(Duration::ZERO);
    }
}

/// Workers kept between cases, by command line and environment.
static POOL: Mutex<Option<HashMap<String, WorkerProcess>>> = Mutex::new(None);

fn key(argv: &[String], env: &[(String, String)]) -> String {
    serde_json::json!([argv, env]).to_string()
}

/// Runs `f` on the worker for `argv`, starting it if needed. `f` answers whether the worker stays for the
/// next case; a failure always kills it (the next case starts a fresh one).
pub fn with_worker<T>(
    argv: &[String],
    env: &[(String, String)],
    deadline: Instant,
    f: impl FnOnce(&mut WorkerProcess) -> Result<(T, bool), Failure>,
) -> Result<T, Failure> {
    let k = key(argv, env);
    let taken = POOL.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashMap::new).remove(&k);
    // A pooled worker that exited while idle is replaced rather than blamed on this case.
    let mut w = match taken.map(|mut w| (w.alive(), w)) {
        Some((true, w)) => w,
        _ => WorkerProcess::start(argv, env, deadline)?,
    };
    let (value, keep) = f(&mut w)?;
    if keep {
        POOL.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashMap::new).insert(k, w);
    }
    Ok(value)
}
