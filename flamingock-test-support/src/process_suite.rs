//! The runner in real operating-system processes: killed (SIGKILL) at every
//! fault point and at random instants, 16 of them racing, a holder paused
//! (SIGSTOP) past its lease and resumed. Each check asserts every change's
//! effect count (1, or the blocked outcome of the crash table) and that no
//! runner went past its deadlines.
//!
//! The in-process suites crash a run by dropping its future; here nothing is
//! simulated: the child is the backend's own test binary, re-executed with
//! the filter `process_child` (see [`process_tests!`](crate::process_tests)),
//! running a real pipeline on the namespace the parent gives it, with the
//! backend's real drivers, and it is killed or paused by signals.
//!
//! Costs are bounded: each check runs a few rounds by default;
//! `FLAMINGOCK_PROCESS_ROUNDS=N` runs N rounds of the random-kill and racing
//! checks instead. A killed runner's lease is short (the backend's
//! [`PipelineCapabilities::lease`]); the runners that finish the work use
//! 10 s leases, so a loaded machine cannot make them lose theirs.
//!
//! ## The child protocol
//!
//! The parent sets `FLAMINGOCK_PROCESS_CHILD=1` and:
//! `FLAMINGOCK_PROCESS_NS` (namespace), `FLAMINGOCK_PROCESS_KIND`
//! (`shared`, `separate-marker`, `separate`), `FLAMINGOCK_PROCESS_CHANGES`
//! (how many changes, ids `c01`, `c02`, ...), `FLAMINGOCK_PROCESS_LEASE_MS`,
//! `FLAMINGOCK_PROCESS_CHANGE_MS` (how long each change sleeps inside its
//! transaction) and optionally `FLAMINGOCK_PROCESS_STOP_AT=<point>:<change>`:
//! there the child prints `AT <point> <change>` and waits for a line on its
//! standard input before it goes on. It prints `LOCKED <token>` when it
//! takes the lock and ends with one line `RESULT <kind> elapsed_ms=<ms> <detail>`
//! and an exit code: 0 done, 3 lease lost, 4 blocked, 1 any other error.
//!
//! With `FLAMINGOCK_PROCESS_STEPS=<n>` the changes are multi-step changes of
//! `n` steps on a directory of files (`FLAMINGOCK_PROCESS_EFFECTS_DIR`),
//! with step checks when `FLAMINGOCK_PROCESS_STEP_CHECKS=1`, and
//! `FLAMINGOCK_PROCESS_STOP_STEP=<begin|end>:<change>:<step>` stops the
//! child inside a step (it prints `AT step-<begin|end> <change> <step>`):
//! see [`multi_step_killed_between_steps`].

mod steps;
pub use steps::{
    multi_step_killed_between_steps, non_transactional_killed_with_and_without_check, StepPoint,
};

use std::io::{BufRead, BufReader, Write};
use std::marker::PhantomData;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flamingock_core::fault::{FaultInjector, FaultPoint};
use flamingock_core::{
    AuditState, Change, ChangeMeta, ChangeResult, Error, Event, Flamingock, HistoryFilter,
    LockConfig, Stage, TargetSystem,
};
use futures::future::BoxFuture;

use crate::namespace;
use crate::pipeline_suite::{Kind, PipelineEnv, PipelineUnderTest};
use crate::BoxError;

const CHILD: &str = "FLAMINGOCK_PROCESS_CHILD";
const NS: &str = "FLAMINGOCK_PROCESS_NS";
const KIND: &str = "FLAMINGOCK_PROCESS_KIND";
const CHANGES: &str = "FLAMINGOCK_PROCESS_CHANGES";
const LEASE_MS: &str = "FLAMINGOCK_PROCESS_LEASE_MS";
const CHANGE_MS: &str = "FLAMINGOCK_PROCESS_CHANGE_MS";
const STOP_AT: &str = "FLAMINGOCK_PROCESS_STOP_AT";
const ROUNDS: &str = "FLAMINGOCK_PROCESS_ROUNDS";
const PARENT: &str = "FLAMINGOCK_PROCESS_PARENT";
/// The name (filter) of the child's entry point that [`process_tests!`](crate::process_tests) defines.
pub const CHILD_ENTRY: &str = "process_child";

/// Lease of the runners that finish the work (never killed).
const FINISHER_LEASE: Duration = Duration::from_secs(10);
/// The longest any child may take: past it the check fails, naming the child.
const CHILD_DEADLINE: Duration = Duration::from_secs(90);

/// Exit codes of the child.
const EXIT_LEASE_LOST: i32 = 3;
const EXIT_BLOCKED: i32 = 4;

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Shared => "shared",
        Kind::SeparateMarker => "separate-marker",
        Kind::Separate => "separate",
        Kind::NonTx => "non-transactional",
    }
}

fn kind_from(name: &str) -> Option<Kind> {
    [
        Kind::Shared,
        Kind::SeparateMarker,
        Kind::Separate,
        Kind::NonTx,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == name)
}

fn point_name(p: FaultPoint) -> &'static str {
    match p {
        FaultPoint::BeforeStart => "before-start",
        FaultPoint::BeforeCommit => "before-commit",
        FaultPoint::AfterCommit => "after-commit",
        FaultPoint::AfterApplied => "after-applied",
    }
}

const POINTS: [FaultPoint; 4] = [
    FaultPoint::BeforeStart,
    FaultPoint::BeforeCommit,
    FaultPoint::AfterCommit,
    FaultPoint::AfterApplied,
];

fn change_id(i: usize) -> String {
    format!("c{:02}", i + 1)
}

fn target_of<T>(env: &PipelineEnv<T>, kind: Kind) -> Option<&T> {
    match kind {
        Kind::Shared => env.shared.as_ref(),
        Kind::SeparateMarker => env.separate_marker.as_ref(),
        Kind::Separate => env.separate.as_ref(),
        Kind::NonTx => None,
    }
}

fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

// ---------------------------------------------------------------------------
// The child

/// A change that bumps its counter, then sleeps inside its transaction
/// (also the bad-input suite's change).
pub(crate) struct Bump<H> {
    pub(crate) id: String,
    pub(crate) target: String,
    pub(crate) pause: Duration,
    pub(crate) _h: PhantomData<fn() -> H>,
}

impl<H: PipelineUnderTest> Change for Bump<H> {
    type Target = H::Target;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.id)
            .order(&self.id)
            .author("process-suite")
            .target(&self.target)
    }
    async fn apply(&self, ctx: &mut <H::Target as TargetSystem>::Context) -> ChangeResult {
        H::bump(ctx, &self.id).await?;
        if !self.pause.is_zero() {
            tokio::time::sleep(self.pause).await;
        }
        Ok(())
    }
}

/// Prints `AT` at the chosen point and waits for a line on stdin.
struct StopAt {
    point: FaultPoint,
    change: String,
}

impl FaultInjector for StopAt {
    fn at<'a>(
        &'a self,
        point: FaultPoint,
        change_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            if point == self.point && change_id == self.change {
                out(&format!("AT {} {change_id}", point_name(point)));
                tokio::task::spawn_blocking(|| {
                    let mut line = String::new();
                    let _ = std::io::stdin().lock().read_line(&mut line);
                })
                .await?;
            }
            Ok(())
        })
    }
}

fn env_var(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// The body of a child process. Called by the `process_child` test that
/// [`process_tests!`](crate::process_tests) defines; does nothing unless the
/// parent set `FLAMINGOCK_PROCESS_CHILD`. Exits the process.
pub fn child_main<H, F, Fut>(sut: F)
where
    H: PipelineUnderTest,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Option<H>>,
{
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let result = rt.block_on(async {
        let sut = sut().await.ok_or("the backend's service is missing")?;
        child_run(&sut).await
    });
    let ms = started.elapsed().as_millis();
    let code = match result {
        Ok(applied) => {
            out(&format!("RESULT ok elapsed_ms={ms} applied={applied}"));
            0
        }
        Err(ChildError::Run(e @ Error::LeaseLost { .. })) => {
            out(&format!("RESULT lease-lost elapsed_ms={ms} {e}"));
            EXIT_LEASE_LOST
        }
        Err(ChildError::Run(e @ Error::Blocked { .. })) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            out(&format!("RESULT blocked elapsed_ms={ms} {first}"));
            EXIT_BLOCKED
        }
        Err(e) => {
            out(&format!(
                "RESULT error elapsed_ms={ms} {}",
                e.to_string().replace('\n', " | ")
            ));
            1
        }
    };
    // Do not let the runtime's shutdown (or the test harness) add anything.
    std::process::exit(code);
}

#[derive(Debug, thiserror::Error)]
enum ChildError {
    #[error(transparent)]
    Run(#[from] Error),
    #[error(transparent)]
    Setup(#[from] BoxError),
}

impl From<&str> for ChildError {
    fn from(s: &str) -> Self {
        ChildError::Setup(s.into())
    }
}

async fn child_run<H: PipelineUnderTest>(sut: &H) -> Result<usize, ChildError> {
    let ns = env_var(NS)?;
    let kind = kind_from(&env_var(KIND)?).ok_or("unknown FLAMINGOCK_PROCESS_KIND")?;
    let n: usize = env_var(CHANGES)?
        .parse()
        .map_err(|_| "bad FLAMINGOCK_PROCESS_CHANGES")?;
    let lease = env_ms(LEASE_MS, 10_000);
    let pause = env_ms(CHANGE_MS, 0);
    let env = sut.open(&ns).await?;
    let mut stage = Stage::new("process");
    let mut b = Flamingock::builder();
    if let Some((changes, effects)) = steps::child_changes(n)? {
        for c in changes {
            stage.add(c);
        }
        b = b.target(flamingock_core::DependencyTarget::new(
            steps::TARGET,
            effects,
        ));
    } else {
        let target = target_of(&env, kind)
            .ok_or("this backend has no target of that kind")?
            .clone();
        for i in 0..n {
            stage.add(Bump::<H> {
                id: change_id(i),
                target: target.id().to_owned(),
                pause,
                _h: PhantomData,
            });
        }
        b = b.target(target);
    }
    let mut b = b
        .service("process-suite")
        .audit_store(env.store.clone())
        .lock_provider(env.lock.clone())
        .stage(stage)
        .lock_config(
            LockConfig::default()
                .lease(lease)
                .acquire_timeout(Duration::from_secs(60)),
        )
        .listener(|e: &Event| {
            if let Event::LockAcquired { token, .. } = e {
                out(&format!("LOCKED {token}"));
            }
        });
    if let Ok(stop) = std::env::var(STOP_AT) {
        let (p, c) = stop
            .split_once(':')
            .ok_or("FLAMINGOCK_PROCESS_STOP_AT is <point>:<change>")?;
        let point = POINTS
            .into_iter()
            .find(|x| point_name(*x) == p)
            .ok_or("unknown fault point")?;
        b = b.fault_injector(std::sync::Arc::new(StopAt {
            point,
            change: c.to_owned(),
        }));
    }
    let report = b.build()?.run().await?;
    Ok(report.totals().applied)
}

// ---------------------------------------------------------------------------
// The parent

/// A child process of the suite.
#[derive(Debug)]
pub struct Runner {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    started: Instant,
    name: String,
    seen: Vec<String>,
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its `RESULT` line, if it printed one.
    pub result: Option<String>,
    /// Everything it printed on stdout.
    pub lines: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

/// What a child is asked to do.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    ns: String,
    kind: Kind,
    changes: usize,
    lease: Duration,
    change_ms: u64,
    stop_at: Option<(FaultPoint, String)>,
    steps: Option<(usize, bool, std::path::PathBuf)>,
    stop_step: Option<(StepPoint, String, usize)>,
    env: Vec<(String, String)>,
}

impl ChildSpec {
    /// `changes` changes of `kind` on namespace `ns`, with a 10 s lease.
    pub fn new(ns: &str, kind: Kind, changes: usize) -> Self {
        ChildSpec {
            ns: ns.to_owned(),
            kind,
            changes,
            lease: FINISHER_LEASE,
            change_ms: 0,
            stop_at: None,
            steps: None,
            stop_step: None,
            env: Vec::new(),
        }
    }
    /// The child's lease.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }
    /// How long each change sleeps inside its transaction.
    pub fn change_ms(mut self, ms: u64) -> Self {
        self.change_ms = ms;
        self
    }
    /// Stop at `point` of change number `index` (0-based) until told to go on.
    pub fn stop_at(mut self, point: FaultPoint, index: usize) -> Self {
        self.stop_at = Some((point, change_id(index)));
        self
    }
    /// Multi-step changes of `steps` steps (with step checks when `checks`)
    /// writing their effects as files in `dir`, instead of the backend's counters.
    pub fn steps(mut self, steps: usize, checks: bool, dir: &std::path::Path) -> Self {
        self.steps = Some((steps, checks, dir.to_owned()));
        self
    }
    /// Stop at `point` of step `step` (0-based) of change number `index`
    /// (0-based) until told to go on.
    pub fn stop_in_step(mut self, point: StepPoint, index: usize, step: usize) -> Self {
        self.stop_step = Some((point, change_id(index), step));
        self
    }
    /// An extra environment variable for the child (e.g. another endpoint).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts the child: this test binary, filtered to its child entry.
    pub fn spawn(&self, name: &str) -> Runner {
        let exe = std::env::current_exe().expect("current exe");
        let mut cmd = Command::new(exe);
        cmd.args([CHILD_ENTRY, "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env(PARENT, family_id().to_string())
            .env(NS, &self.ns)
            .env(KIND, kind_name(self.kind))
            .env(CHANGES, self.changes.to_string())
            .env(LEASE_MS, self.lease.as_millis().to_string())
            .env(CHANGE_MS, self.change_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some((p, c)) = &self.stop_at {
            cmd.env(STOP_AT, format!("{}:{c}", point_name(*p)));
        }
        if let Some((n, checks, dir)) = &self.steps {
            cmd.env(steps::STEPS, n.to_string())
                .env(steps::STEP_CHECKS, if *checks { "1" } else { "0" })
                .env(steps::EFFECTS_DIR, dir);
        }
        if let Some((p, c, k)) = &self.stop_step {
            cmd.env(steps::STOP_STEP, format!("{}:{c}:{k}", p.name()));
        }
        // Servers this process started in containers: the children use them.
        for (k, v) in crate::services::container_endpoints() {
            cmd.env(k, v);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn a child runner");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Runner {
            child,
            stdin,
            lines: rx,
            started: Instant::now(),
            name: name.to_owned(),
            seen: Vec::new(),
        }
    }
}

impl Runner {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (blocking, bounded) for a line with `prefix`; returns the line from there.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + CHILD_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    // The test harness may print its own text before ours
                    // on the same line.
                    if let Some(at) = line.find(prefix) {
                        return line[at..].to_owned();
                    }
                }
                Err(e) => panic!(
                    "{}: no line starting with {prefix:?} ({e:?}); it printed {:?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// Sends a signal (`STOP`, `CONT`) to the child.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid =
            rustix::process::Pid::from_raw(i32::try_from(self.pid()).expect("pid")).expect("pid");
        rustix::process::kill_process(pid, signal).expect("signal the child");
    }

    /// Lets a child stopped at its fault point go on.
    pub fn go_on(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "go");
            let _ = stdin.flush();
        }
    }

    /// SIGKILL, then reaps the child.
    pub fn kill(mut self) -> Ended {
        let _ = self.child.kill();
        self.finish()
    }

    /// Waits for the child to exit, at most [`CHILD_DEADLINE`]: a child that
    /// takes longer went past its own deadlines and fails the check.
    pub fn finish(mut self) -> Ended {
        drop(self.stdin.take());
        let deadline = self.started + CHILD_DEADLINE;
        let status = loop {
            match self.child.try_wait().expect("wait for child") {
                Some(s) => break s,
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    panic!(
                        "{} ran longer than {:?}: a runner exceeded its deadlines; it printed {:?}",
                        self.name, CHILD_DEADLINE, self.seen
                    );
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let elapsed = self.started.elapsed();
        // The reader thread ends at EOF; collect what is left.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        Ended {
            code: status.code(),
            result: self
                .seen
                .iter()
                .find_map(|l| l.find("RESULT ").map(|at| l[at..].to_owned())),
            lines: self.seen,
            elapsed,
        }
    }
}

impl Ended {
    fn expect_code(&self, what: &str, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: expected exit code {code}, got {:?}; printed {:?}",
            self.code,
            self.lines
        );
    }
}

/// The same number in a test process and in every child it starts (its
/// pid): a backend whose test setup names things per process (e.g. a random
/// key prefix) derives the name from this so that children share it.
pub fn family_id() -> u32 {
    std::env::var(PARENT)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(std::process::id)
}

/// Rounds of the random-kill and racing checks.
fn rounds(default: usize) -> usize {
    std::env::var(ROUNDS)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Effect counts of `changes` changes, in order.
async fn counts<H: PipelineUnderTest>(sut: &H, ns: &str, kind: Kind, changes: usize) -> Vec<u64> {
    let env = sut.open(ns).await.expect("open backend");
    let target = target_of(&env, kind).expect("target").clone();
    let mut out = Vec::new();
    for i in 0..changes {
        out.push(sut.count(&target, &change_id(i)).await.expect("count"));
    }
    out
}

async fn applied_entries<H: PipelineUnderTest>(sut: &H, ns: &str, id: &str) -> usize {
    let env = sut.open(ns).await.expect("open backend");
    env.store
        .history(&HistoryFilter::all().change(id))
        .await
        .expect("history")
        .iter()
        .filter(|e| e.state == AuditState::Applied)
        .count()
}

fn kinds<H: PipelineUnderTest>(env: &PipelineEnv<H::Target>) -> Vec<Kind> {
    [Kind::Shared, Kind::SeparateMarker, Kind::Separate]
        .into_iter()
        .filter(|k| target_of(env, *k).is_some())
        .collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// Starts `spec`, waits until it stops where it was told to (`AT ...`) and
/// SIGKILLs it there; `cell` names the check's case in a failure.
async fn killed_where_it_stops(spec: ChildSpec, cell: &str) -> Ended {
    let ended = blocking(move || {
        let mut a = spec.spawn("runner killed where it stopped");
        a.wait_for("AT ");
        a.kill()
    })
    .await;
    assert_eq!(
        ended.code, None,
        "{cell}: the child was not killed: {ended:?}"
    );
    ended
}

/// Runs `spec` to its end (bounded by [`CHILD_DEADLINE`]).
async fn run_to_end(spec: ChildSpec) -> Ended {
    blocking(move || spec.spawn("next runner").finish()).await
}

/// What the crash table says the next run finds after a kill at `point` of
/// the middle change: `None` = everything applied exactly once; `Some(c)` =
/// blocked, with the middle change's effect count `c`.
fn crash_table(kind: Kind, point: FaultPoint) -> Option<u64> {
    match (kind, point) {
        (Kind::Separate, FaultPoint::BeforeCommit) => Some(0),
        (Kind::Separate, FaultPoint::AfterCommit) => Some(1),
        _ => None,
    }
}

/// SIGKILL at each fault point of the second of three changes, for every
/// transactional strategy the backend has; the next runner finds the
/// crash table's outcome (DESIGN section 5) and exits within its deadlines.
pub async fn killed_at_each_fault_point<H: PipelineUnderTest>(sut: &H) {
    let probe = namespace("proc");
    let env = sut.open(&probe).await.expect("open backend");
    let kinds = kinds::<H>(&env);
    let _ = sut.cleanup(&probe).await;
    let short = sut.capabilities().lease;
    for kind in kinds {
        for point in POINTS {
            let ns = namespace("proc");
            let cell = format!("{} / {}", kind_name(kind), point_name(point));
            let spec = ChildSpec::new(&ns, kind, 3).lease(short).stop_at(point, 1);
            killed_where_it_stops(spec, &cell).await;
            let ended = run_to_end(ChildSpec::new(&ns, kind, 3)).await;
            let c = counts(sut, &ns, kind, 3).await;
            match crash_table(kind, point) {
                None => {
                    ended.expect_code(&cell, 0);
                    assert_eq!(c, [1, 1, 1], "{cell}: each change exactly once");
                }
                Some(middle) => {
                    ended.expect_code(&cell, EXIT_BLOCKED);
                    assert_eq!(c, [1, middle, 0], "{cell}: blocked as the crash table says");
                }
            }
            assert!(
                ended.elapsed < short + Duration::from_secs(60),
                "{cell}: the next runner took {:?}",
                ended.elapsed
            );
            let _ = sut.cleanup(&ns).await;
        }
    }
}

fn best_kind<H: PipelineUnderTest>(env: &PipelineEnv<H::Target>) -> Option<Kind> {
    [Kind::Shared, Kind::SeparateMarker]
        .into_iter()
        .find(|k| target_of(env, *k).is_some())
}

/// SIGKILL at a random instant of a run of five changes, then a normal run:
/// every change's effect exactly once (strategies where no crash blocks).
pub async fn killed_at_random_instants<H: PipelineUnderTest>(sut: &H) {
    let short = sut.capabilities().lease;
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    for round in 0..rounds(3) {
        let ns = namespace("proc");
        let env = sut.open(&ns).await.expect("open backend");
        let kind = best_kind::<H>(&env).expect("the process suite needs a shared or marker target");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 400);
        let spec = ChildSpec::new(&ns, kind, 5).lease(short).change_ms(40);
        let ended = blocking(move || {
            let a = spec.spawn("runner killed at random");
            std::thread::sleep(delay);
            a.kill()
        })
        .await;
        let after = run_to_end(ChildSpec::new(&ns, kind, 5)).await;
        after.expect_code(&format!("round {round}, killed after {delay:?}"), 0);
        assert_eq!(
            counts(sut, &ns, kind, 5).await,
            [1, 1, 1, 1, 1],
            "round {round}: killed after {delay:?} ({ended:?})"
        );
        let _ = sut.cleanup(&ns).await;
    }
}

/// Sixteen processes (the backend's `runners`) start at once on a fresh
/// namespace: all succeed, each change takes effect exactly once.
pub async fn racing_processes<H: PipelineUnderTest>(sut: &H) {
    let n = sut.capabilities().runners;
    for round in 0..rounds(1) {
        let ns = namespace("proc");
        let env = sut.open(&ns).await.expect("open backend");
        let kind = best_kind::<H>(&env).unwrap_or(Kind::Separate);
        let spec = ChildSpec::new(&ns, kind, 10);
        let ended = blocking(move || {
            let runners: Vec<Runner> = (0..n).map(|i| spec.spawn(&format!("racer {i}"))).collect();
            runners.into_iter().map(Runner::finish).collect::<Vec<_>>()
        })
        .await;
        for (i, e) in ended.iter().enumerate() {
            e.expect_code(&format!("round {round}, racer {i}"), 0);
        }
        assert_eq!(
            counts(sut, &ns, kind, 10).await,
            vec![1; 10],
            "round {round}: each change exactly once with {n} racing processes"
        );
        let _ = sut.cleanup(&ns).await;
    }
}

/// A holder paused (SIGSTOP) inside its first change past its lease: another
/// runner takes over and applies everything; the resumed holder stops with
/// "lease lost" without committing. Single-writer stores pause it just
/// before the change (nobody could write while its transaction is open).
pub async fn paused_holder_past_its_lease<H: PipelineUnderTest>(sut: &H) {
    let short = sut.capabilities().lease;
    let ns = namespace("proc");
    let env = sut.open(&ns).await.expect("open backend");
    let kind = best_kind::<H>(&env).unwrap_or(Kind::Separate);
    let point = if sut.capabilities().single_writer {
        FaultPoint::BeforeStart
    } else {
        FaultPoint::BeforeCommit
    };
    let spec = ChildSpec::new(&ns, kind, 3).lease(short).stop_at(point, 0);
    let next = ChildSpec::new(&ns, kind, 3);
    let (a, b) = blocking(move || {
        let mut a = spec.spawn("paused holder");
        a.wait_for("AT ");
        a.signal(rustix::process::Signal::STOP);
        std::thread::sleep(short + short / 2);
        let mut b = next.spawn("runner taking over");
        // B has the lock: resume A while B works (B's change may wait on
        // what A's open transaction holds until A gives up).
        b.wait_for("LOCKED");
        std::thread::sleep(Duration::from_millis(300));
        a.signal(rustix::process::Signal::CONT);
        a.go_on();
        let a = a.finish();
        (a, b.finish())
    })
    .await;
    b.expect_code("runner taking over", 0);
    a.expect_code("resumed holder", EXIT_LEASE_LOST);
    assert_eq!(counts(sut, &ns, kind, 3).await, [1, 1, 1]);
    assert_eq!(
        applied_entries(sut, &ns, "c01").await,
        1,
        "one APPLIED entry"
    );
    let _ = sut.cleanup(&ns).await;
}

/// Expands to the process-level checks for a backend, plus the child entry
/// point `process_child` (an ignored test: the body of the child processes).
/// Invoke it at the top level of an integration-test file, with the path of
/// an `async fn() -> Option<impl PipelineUnderTest>` whose backend has a
/// shared-transaction or marker target.
#[macro_export]
macro_rules! process_tests {
    ($sut:path) => {
        #[test]
        #[ignore = "the body of the process-level suite's child processes; run by the other process checks"]
        fn process_child() {
            $crate::process_suite::child_main($sut);
        }
        $crate::__process_check!($sut, killed_at_each_fault_point);
        $crate::__process_check!($sut, killed_at_random_instants);
        $crate::__process_check!($sut, racing_processes);
        $crate::__process_check!($sut, paused_holder_past_its_lease);
        $crate::__process_check!($sut, multi_step_killed_between_steps);
        $crate::__process_check!($sut, non_transactional_killed_with_and_without_check);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __process_check {
    ($sut:path, $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let sut = $sut().await.expect(
                "the backend under test is unavailable: a check never passes without running",
            );
            $crate::process_suite::$check(&sut).await;
        }
    };
}

/// Wall times of one racing benchmark: a runner process alone, and
/// `runners` processes started at once, on fresh namespaces.
#[derive(Debug, Clone)]
pub struct RaceFigures {
    /// Each round's wall time of one runner alone (spawn to exit).
    pub alone: Vec<Duration>,
    /// Each round's wall time of the racing processes (spawn of the first
    /// to exit of the last).
    pub racing: Vec<Duration>,
    /// Each round's wall time of the same processes started together on the
    /// namespace they just migrated (nothing pending: process start,
    /// connect and the lock-free check only) - the machine's floor.
    pub nothing_pending: Vec<Duration>,
    /// How many processes raced.
    pub runners: usize,
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len() / 2).copied().unwrap_or_default()
}

impl RaceFigures {
    /// Median of the racing rounds over the median alone.
    pub fn ratio(&self) -> f64 {
        median(&self.racing).as_secs_f64() / median(&self.alone).as_secs_f64().max(f64::EPSILON)
    }

    /// The figures as the benchmarks print them.
    pub fn render(&self, what: &str) -> String {
        let line = |v: &[Duration]| {
            let min = v.iter().min().copied().unwrap_or_default();
            let max = v.iter().max().copied().unwrap_or_default();
            format!(
                "median {} ms (min {} ms, max {} ms)",
                median(v).as_millis(),
                min.as_millis(),
                max.as_millis()
            )
        };
        format!(
            "{what}, {} rounds, exactly-once checked in every round:\n  \
             1 runner alone:                    {}\n  \
             {n} runners at once:               {}\n  \
             {n} runners, nothing pending:      {}\n  \
             ratio racing / alone:              {:.2}x (goal <= 1.5x)\n  \
             ratio racing / nothing pending:    {:.2}x (what the lock protocol adds)",
            self.alone.len(),
            line(&self.alone),
            line(&self.racing),
            line(&self.nothing_pending),
            self.ratio(),
            median(&self.racing).as_secs_f64()
                / median(&self.nothing_pending)
                    .as_secs_f64()
                    .max(f64::EPSILON),
            n = self.runners,
        )
    }
}

/// The racing benchmark (not a test: it asserts only exactly-once): in
/// each round, one runner process alone on a fresh namespace, then
/// `runners` processes started together on another, every process applying
/// `changes` changes of `kind`. Call it from a benchmark binary whose
/// `main` first calls [`child_main`].
pub async fn race<H: PipelineUnderTest>(
    sut: &H,
    kind: Kind,
    changes: usize,
    runners: usize,
    rounds: usize,
) -> RaceFigures {
    let mut figures = RaceFigures {
        alone: Vec::new(),
        racing: Vec::new(),
        nothing_pending: Vec::new(),
        runners,
    };
    for round in 0..rounds {
        for n in [1, runners] {
            let ns = namespace("race");
            let spec = ChildSpec::new(&ns, kind, changes);
            let (wall, ended) = blocking(move || {
                let t = Instant::now();
                let all: Vec<Runner> = (0..n).map(|i| spec.spawn(&format!("runner {i}"))).collect();
                let ended: Vec<Ended> = all.into_iter().map(Runner::finish).collect();
                (t.elapsed(), ended)
            })
            .await;
            for (i, e) in ended.iter().enumerate() {
                e.expect_code(&format!("round {round}, {n} runners, runner {i}"), 0);
            }
            assert_eq!(
                counts(sut, &ns, kind, changes).await,
                vec![1; changes],
                "round {round}: each change exactly once with {n} processes"
            );
            if n == 1 {
                figures.alone.push(wall);
            } else {
                figures.racing.push(wall);
                let spec = ChildSpec::new(&ns, kind, changes);
                let wall = blocking(move || {
                    let t = Instant::now();
                    let all: Vec<Runner> = (0..n)
                        .map(|i| spec.spawn(&format!("idle runner {i}")))
                        .collect();
                    for r in all {
                        r.finish().expect_code("runner with nothing pending", 0);
                    }
                    t.elapsed()
                })
                .await;
                figures.nothing_pending.push(wall);
            }
            let _ = sut.cleanup(&ns).await;
        }
    }
    figures
}

/// The whole `main` of a racing benchmark binary, less the printing: runs
/// as a child when the parent started this process as one (and exits),
/// else measures [`race`] with 16 processes and 10 changes of `kind`, 7
/// rounds under `cargo bench` (1 when `cargo test` runs the benchmark), and
/// returns the figures as text, or why nothing was measured.
pub fn race_bench<H, F, Fut>(sut: F, kind: Kind, what: &str) -> String
where
    H: PipelineUnderTest,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<H>>,
{
    child_main(&sut);
    let rounds = if std::env::args().any(|a| a == "--bench") {
        7
    } else {
        1
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        match sut().await {
            Some(s) => race(&s, kind, 10, 16, rounds).await.render(what),
            None => format!("{what}: the service is not configured; nothing measured"),
        }
    })
}
