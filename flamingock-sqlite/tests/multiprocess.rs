//! Several processes on one SQLite file: each change is applied exactly
//! once, whoever wins the lock.
//!
//! The parent test re-executes this test binary (`std::env::current_exe()`)
//! four times with `FLAMINGOCK_SQLITE_CHILD=<database file>` and a filter
//! to [`child_process_entry`]; each child runs the same pipeline on the same
//! file at the same moment.
//!
//! **About `child_process_entry`:** it is the child's body, not a test, so
//! it is `#[ignore]`d: a normal run lists it as ignored, never as passed. The
//! real check is [`four_processes_apply_each_change_exactly_once`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use flamingock_core::{
    AuditState, AuditStore, Change, ChangeMeta, ChangeResult, Flamingock, HistoryFilter,
    LockConfig, Stage,
};
use flamingock_sqlite::{sqlx, SqliteAuditStore, SqliteContext, SqliteTarget};

const CHILD_VAR: &str = "FLAMINGOCK_SQLITE_CHILD";
const PROCESSES: usize = 4;
const REPETITIONS: usize = 10;

/// Every change appends one row to `effects` (no unique key: a double
/// application would show as two rows).
struct Effect {
    id: &'static str,
    order: &'static str,
    target: &'static str,
    transactional: bool,
}

impl Change for Effect {
    type Target = SqliteTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.id)
            .order(self.order)
            .author("multiprocess")
            .target(self.target)
            .transactional(self.transactional)
    }
    async fn apply(&self, db: &mut SqliteContext) -> ChangeResult {
        sqlx::query("CREATE TABLE IF NOT EXISTS effects (change_id TEXT NOT NULL, pid INTEGER)")
            .execute(db.conn())
            .await?;
        sqlx::query("INSERT INTO effects (change_id, pid) VALUES (?1, ?2)")
            .bind(self.id)
            .bind(i64::from(std::process::id()))
            .execute(db.conn())
            .await?;
        // Long enough for the other processes to pile up on the lock.
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(())
    }
}

/// Shared transaction, non-transactional on the store's file, and separate
/// transaction with marker on a second file.
const CHANGES: &[(&str, &str, &str, bool)] = &[
    ("create-a", "0001", "app", true),
    ("seed-a", "0002", "app", true),
    ("plain-a", "0003", "app", false),
    ("other-a", "0004", "other", true),
    ("other-b", "0005", "other", true),
    ("seed-b", "0006", "app", true),
];

fn other_file(main: &Path) -> PathBuf {
    let mut p = main.as_os_str().to_owned();
    p.push("-other.db");
    PathBuf::from(p)
}

async fn run_child(path: &Path) -> Result<usize, Box<dyn std::error::Error>> {
    let store = SqliteAuditStore::connect(path).await?;
    let other = SqliteTarget::builder("other", other_file(path))
        .build()
        .await?;
    let mut stage = Stage::new("all");
    for &(id, order, target, transactional) in CHANGES {
        stage.add(Effect {
            id,
            order,
            target,
            transactional,
        });
    }
    let runner = Flamingock::builder()
        .service("multiprocess")
        .audit_store(store.clone())
        .target(
            store
                .shared_target("app")
                .build()
                .await
                .expect("shared target"),
        )
        .target(other)
        .stage(stage)
        .lock_config(
            LockConfig::default()
                .retry_interval(Duration::from_millis(20))
                .acquire_timeout(Duration::from_secs(120)),
        )
        .build()?;
    let report = runner.run().await?;
    Ok(report.totals().applied)
}

/// The child's body (see the module docs). Ignored, so a normal run never
/// counts it as a passing test; the parent runs it with `--ignored`.
#[test]
#[ignore = "the body of a child process; run by four_processes_apply_each_change_exactly_once"]
fn child_process_entry() {
    let Some(path) = std::env::var_os(CHILD_VAR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run_child(Path::new(&path))) {
        // The parent reads this line.
        Ok(applied) => eprintln!("CHILD-APPLIED {applied}"),
        Err(e) => panic!("child run failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_apply_each_change_exactly_once() {
    let exe = std::env::current_exe().expect("test binary");
    let dir = tempfile::Builder::new()
        .prefix("flamingock-sqlite-mp-")
        .tempdir()
        .expect("temp dir");
    for rep in 0..REPETITIONS {
        let db = dir.path().join(format!("rep{rep}.db"));
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                tokio::process::Command::new(&exe)
                    .args([
                        "--ignored",
                        "--exact",
                        "child_process_entry",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_VAR, &db)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn a child process")
            })
            .collect();
        let mut applied_total = 0;
        for child in children {
            let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
                .await
                .expect("child finished in time")
                .expect("child output");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "rep {rep}: a child failed ({}):\n{stderr}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
            let applied: usize = stderr
                .lines()
                .find_map(|l| l.strip_prefix("CHILD-APPLIED "))
                .unwrap_or_else(|| {
                    panic!("rep {rep}: the child did not run the pipeline:\n{stderr}")
                })
                .trim()
                .parse()
                .expect("applied count");
            applied_total += applied;
        }
        assert_eq!(
            applied_total,
            CHANGES.len(),
            "rep {rep}: applied across processes"
        );

        let store = SqliteAuditStore::connect(&db).await.expect("open");
        let other = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new().filename(other_file(&db)),
        )
        .await
        .expect("open other file");
        for &(id, _, target, _) in CHANGES {
            let pool = if target == "app" {
                store.pool()
            } else {
                &other
            };
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM effects WHERE change_id = ?1")
                .bind(id)
                .fetch_one(pool)
                .await
                .expect("count effects");
            assert_eq!(n, 1, "rep {rep}: effect of {id}");
            let applied = store
                .history(&HistoryFilter::all().change(id))
                .await
                .expect("history")
                .iter()
                .filter(|e| e.state == AuditState::Applied)
                .count();
            assert_eq!(applied, 1, "rep {rep}: APPLIED entries of {id}");
        }
        let snapshot = store.snapshot().await.expect("snapshot");
        assert!(snapshot.iter().all(|e| e.state == AuditState::Applied));
        assert_eq!(snapshot.len(), CHANGES.len());
    }
}
