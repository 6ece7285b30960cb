//! Starts the reference atproto network (PLC directory + PDS, from `../shared/peers`) for integration
//! tests, and stops it when the handle is dropped.
//!
//! Each [`TestNetwork::start`] is an independent network on free ports, seeded with three accounts
//! (alice, bob, carol). The folder is `shared/peers` beside the workspace, or `BUTTERFLY_PEERS_DIR`.
//! If it is missing or not installed, the test fails with a message saying how to fix it: network
//! tests are never skipped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// One seeded account of the test network.
#[derive(Clone, Debug)]
pub struct Account {
    /// e.g. `alice.test`.
    pub handle: String,
    /// The account's `did:plc`.
    pub did: String,
    /// The account password (usable with `createSession`).
    pub password: String,
    /// The account email.
    pub email: String,
}

/// A running reference PLC + PDS. Dropping it stops both.
pub struct TestNetwork {
    /// PLC directory base URL, e.g. `http://localhost:33613`.
    pub plc: String,
    /// PDS base URL, e.g. `http://localhost:37821`.
    pub pds: String,
    /// The `subscribeRepos` websocket URL.
    pub firehose: String,
    /// The PDS admin password (HTTP Basic user `admin`).
    pub admin_password: String,
    /// The seeded accounts, in order: alice, bob, carol.
    pub accounts: Vec<Account>,
    /// The whole ready line, for fields not mirrored above (`blob`, `records`, ...).
    pub ready: serde_json::Value,
    child: Child,
    // Held so that the network exits if this process dies (EXIT_ON_STDIN_CLOSE).
    _stdin: Option<std::process::ChildStdin>,
}

/// The `shared/peers` folder.
pub fn peers_dir() -> PathBuf {
    match std::env::var_os("BUTTERFLY_PEERS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/peers"
        )),
    }
}

/// Runs `npm ci` in the peers folder unless the installed tree matches `package-lock.json` (the same
/// stamp `.ci/run` writes). Test binaries run in parallel, so the check and install hold a file lock.
fn ensure_installed(dir: &std::path::Path) {
    const SCRIPT: &str = r#"
        want=$(sha256sum package-lock.json | cut -d' ' -f1)
        if [ "$(cat node_modules/.butterfly-ci-installed 2>/dev/null)" != "$want" ]; then
          echo "butterfly-testnet: installing the reference network (npm ci, about 2 minutes)" >&2
          npm ci --no-audit --no-fund --loglevel=error >&2 || exit 1
          echo "$want" > node_modules/.butterfly-ci-installed
        fi
    "#;
    let status = Command::new("flock")
        .arg(dir.join(".butterfly-install.lock"))
        .args(["sh", "-c", SCRIPT])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => {}
        other => panic!(
            "cannot install the reference network in {} ({other:?}): run `npm ci` there by hand \
             (needs npm and util-linux flock)",
            dir.display()
        ),
    }
}

impl TestNetwork {
    /// Starts a seeded network and waits (up to two minutes) for its ready line.
    ///
    /// # Panics
    /// When the peers are not installed or do not start: this is test support, and the message says
    /// what to do.
    pub fn start() -> TestNetwork {
        Self::start_with(&[])
    }

    /// Like [`TestNetwork::start`], with extra environment variables for `start.sh` (e.g. `SEED=0`).
    pub fn start_with(env: &[(&str, &str)]) -> TestNetwork {
        let dir = peers_dir();
        let script = dir.join("start.sh");
        assert!(
            script.is_file(),
            "the reference network is not at {}: put shared/ beside the workspace or set BUTTERFLY_PEERS_DIR",
            dir.display()
        );
        ensure_installed(&dir);
        // `start.sh` picks free ports and then listens on them; another test may take a port in
        // between, and then the network exits before its ready line. Such a start is tried again.
        let mut attempt = 1;
        loop {
            match Self::spawn(&dir, &script, env) {
                Ok(network) => return network,
                Err(reason) if attempt < 3 => {
                    eprintln!(
                        "the reference network exited before it was ready ({reason}); trying again"
                    );
                    attempt += 1;
                }
                Err(reason) => {
                    panic!("the reference network did not print its ready line: {reason}")
                }
            }
        }
    }

    /// One start: `Err` when the network exited before printing its ready line.
    fn spawn(dir: &Path, script: &Path, env: &[(&str, &str)]) -> Result<TestNetwork, String> {
        let mut command = Command::new(script);
        command
            .current_dir(dir)
            .env("EXIT_ON_STDIN_CLOSE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let result = reader.read_line(&mut line).map(|_| line);
            let _ = sender.send(result);
            // Keep draining so the child never blocks on a full pipe.
            let mut sink = String::new();
            while matches!(reader.read_line(&mut sink), Ok(n) if n > 0) {
                sink.clear();
            }
        });
        let line = match receiver.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            Ok(Ok(_)) => {
                let status = child.wait();
                return Err(format!("it exited: {status:?}"));
            }
            other => {
                let _ = child.kill();
                panic!("the reference network did not print its ready line: {other:?}")
            }
        };
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("bad ready line {line:?}: {error}"));
        let text = |value: &serde_json::Value, key: &str| -> String {
            value[key]
                .as_str()
                .unwrap_or_else(|| panic!("ready line lacks {key}: {line}"))
                .to_owned()
        };
        let accounts = ready["accounts"]
            .as_array()
            .map(|accounts| {
                accounts
                    .iter()
                    .map(|account| Account {
                        handle: text(account, "handle"),
                        did: text(account, "did"),
                        password: text(account, "password"),
                        email: text(account, "email"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(TestNetwork {
            plc: text(&ready, "plc"),
            pds: text(&ready, "pds"),
            firehose: text(&ready, "firehose"),
            admin_password: text(&ready, "adminPassword"),
            accounts,
            ready,
            _stdin: child.stdin.take(),
            child,
        })
    }

    /// The seeded account with this handle prefix (`"alice"`, `"bob"`, `"carol"`).
    pub fn account(&self, name: &str) -> &Account {
        self.accounts
            .iter()
            .find(|account| account.handle.split('.').next() == Some(name))
            .unwrap_or_else(|| panic!("no seeded account {name}"))
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        // SIGTERM lets the network delete its temp dir; closing stdin backs it up.
        let pid = self.child.id().to_string();
        let terminated = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|status| status.success());
        self._stdin.take();
        if terminated {
            for _ in 0..100 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
