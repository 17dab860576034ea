//! What the Redis lock costs a runner: the acquire + release round trip
//! (two `EVALSHA` calls) against a real server, one after the other on one
//! connection.
//!
//! `FLAMINGOCK_TEST_REDIS_URL=redis://host:6379/ cargo bench -p flamingock-redis-lock --bench round_trip`
//! prints median, p99 and max over 2,000 iterations (after 200 warm-up ones)
//! of: acquire + release, acquire alone, release alone, extend, and the
//! answer a waiting runner gets while the lock is held.
//!
//! `FLAMINGOCK_BENCH_ITERATIONS=N` changes the count; without `--bench`
//! (`cargo test --benches`) it does a 20-iteration smoke run.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use flamingock_core::{Acquire, LockProvider};
use flamingock_redis_lock::RedisLock;

#[derive(Default)]
struct Samples {
    round_trip: Vec<Duration>,
    acquire: Vec<Duration>,
    release: Vec<Duration>,
    extend: Vec<Duration>,
    held: Vec<Duration>,
}

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<22} median {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}  (n = {})",
        at(0.5),
        at(0.99),
        at(1.0),
        samples.len()
    );
}

async fn bench(
    url: &str,
    iterations: usize,
    warmup: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let ns = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let lock = RedisLock::builder(url).name(&ns).build().await?;
    let lease = Duration::from_secs(60);
    let mut s = Samples::default();
    for i in 0..warmup + iterations {
        let keep = i >= warmup;
        let t0 = Instant::now();
        let token = match lock.try_acquire("bench", lease).await? {
            Acquire::Acquired(l) => l.token,
            Acquire::Held(h) => return Err(format!("lock unexpectedly held: {h:?}").into()),
        };
        let t1 = Instant::now();
        lock.extend("bench", token, lease).await?;
        let t2 = Instant::now();
        match lock.try_acquire("waiter", lease).await? {
            Acquire::Held(_) => {}
            Acquire::Acquired(_) => return Err("a second owner got a held lock".into()),
        }
        let t3 = Instant::now();
        lock.release("bench", token).await?;
        let t4 = Instant::now();
        if keep {
            s.acquire.push(t1 - t0);
            s.extend.push(t2 - t1);
            s.held.push(t3 - t2);
            s.release.push(t4 - t3);
            // The round trip a runner pays: acquire + release.
            s.round_trip.push((t1 - t0) + (t4 - t3));
        }
    }
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let _: i64 = redis::cmd("DEL")
        .arg(lock.lock_key())
        .arg(lock.token_key())
        .query_async(&mut conn)
        .await?;
    println!("Redis lock, {iterations} iterations on one connection:");
    report("acquire + release", &mut s.round_trip);
    report("acquire", &mut s.acquire);
    report("release", &mut s.release);
    report("extend", &mut s.extend);
    report("acquire while held", &mut s.held);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("FLAMINGOCK_TEST_REDIS_URL") else {
        println!(
            "round_trip: set FLAMINGOCK_TEST_REDIS_URL=redis://host:6379/ to run this benchmark"
        );
        return Ok(());
    };
    let full = std::env::args().any(|a| a == "--bench");
    let iterations = match std::env::var("FLAMINGOCK_BENCH_ITERATIONS") {
        Ok(n) => n.parse()?,
        Err(_) if full => 2_000,
        Err(_) => 20,
    };
    let warmup = if full { 200 } else { 2 };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(&url, iterations.max(1), warmup))
}
