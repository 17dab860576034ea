//! Running the built `flamingock` binary in tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// What one invocation did.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            code,
            "unexpected exit code; output:\n{}",
            self.all()
        );
        self
    }
}

/// Runs the binary with `args`, no stdin, and an environment without the
/// variables the CLI reads.
pub fn flamingock(args: &[&str]) -> Output {
    flamingock_without(args, &[])
}

/// [`flamingock`] with the variables `unset` removed from its environment too.
pub fn flamingock_without(args: &[&str], unset: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flamingock"));
    for v in unset {
        cmd.env_remove(v);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .env_remove("FLAMINGOCK_STORE_URL")
        .env_remove("FLAMINGOCK_CHANGES_DIR")
        .env_remove("FLAMINGOCK_SCHEMA")
        .env_remove("FLAMINGOCK_OPERATOR")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    let out = cmd.output().expect("run the flamingock binary");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `files` into `dir` (created if needed).
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("create the changes directory");
    for (name, content) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a migration directory");
        }
        std::fs::write(path, content).expect("write a change file");
    }
}

/// The state of `change_id` in `audit list --json` output.
pub fn state_of(list: &serde_json::Value, change_id: &str) -> Option<String> {
    list.as_array()?
        .iter()
        .find(|e| e["change_id"] == change_id)
        .and_then(|e| e["state"].as_str())
        .map(str::to_owned)
}

/// Flyway's checksum of a file: CRC-32 over its lines without endings (as
/// `ChecksumCalculator` computes it), written here independently of the CLI.
pub fn flyway_checksum(content: &str) -> i32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    let mut crc = !0u32;
    for line in content.lines() {
        for b in line.bytes() {
            crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
    }
    !crc as i32
}

/// The strings of a JSON array (empty when it is not one).
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The changes `apply --json` applied, in order.
pub fn applied_ids(v: &serde_json::Value) -> Vec<String> {
    v["report"]["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["outcome"]["outcome"] == "applied")
                .filter_map(|c| c["change_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
