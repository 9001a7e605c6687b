//! A Redis that lost acknowledged writes is never believed for the entries
//! it held before: the stock 5 is cached, Redis saves a snapshot, an arrival
//! of 7 commits (the answer is 12, and the delete of the cached 5 is
//! acknowledged), then Redis comes back from the snapshot, with the 5 in it:
//! restarted (a new run id: the epoch's marker names another server) or
//! reloaded in place with `DEBUG RELOAD NOSAVE` (the same run id and the
//! same marker: Redis pushes a flush to the tracking connection). Each time,
//! no read returns 5, and caching resumes in a new epoch. Each test runs a
//! Redis of its own.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use uuid::Uuid;
use warehouse_monitor::cache::Key;

use crate::support::{
    helpers::{Ev, TestApp, eventually, free_port, stock_path, test_settings},
    metrics::scrape,
    redis::{OwnRedis, RawRedis, Watch, cache_hits, redis_cli},
};

/// How Redis comes back from the snapshot.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// Killed and started again on the same port and directory.
    Restart,
    /// `DEBUG RELOAD NOSAVE`: the dump on disk replaces the data set in
    /// place; the process, its run id and its connections stay.
    Reload,
}

fn run_id(port: u16) -> String {
    let info = redis_cli(port, &["INFO", "server"]);
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .expect("run_id")
        .trim()
        .to_owned()
}

async fn lost_writes_are_never_served(loss: Loss) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("wm-redis-lost-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.display().to_string();
    let options = ["--dir", dir_arg.as_str(), "--enable-debug-command", "yes"];
    let mut redis = OwnRedis::start_with(port, &options).await;
    let mut settings = test_settings(1);
    settings.redis.url = redis.url().into();
    let app = Arc::new(TestApp::spawn_with(settings.clone()).await);
    let peek = RawRedis::connect(settings.redis.url.expose()).await;
    let (w, p) = (Uuid::new_v4(), Uuid::new_v4());
    let path = stock_path(w, p);
    let key = Key::Stock {
        warehouse_id: w,
        product_id: p,
    };
    let quantity = |body: serde_json::Value| body["quantity"].as_i64().unwrap();

    app.produce(0, vec![Ev::arrival(Uuid::new_v4(), w, p, 5).bytes()])
        .await;
    app.wait_consumed().await;
    let epoch = app.cache_epoch().await;
    // Read until the 5 is a hit: cached.
    let hits = cache_hits(&app).await;
    eventually(10, || async {
        assert_eq!(quantity(app.get_json(&path).await.1), 5);
        (cache_hits(&app).await > hits)
            .then_some(())
            .ok_or("the 5 is cached")
    })
    .await;
    let cached_five = peek.entry(key, epoch).await.expect("the 5 is in Redis");
    assert_eq!(redis_cli(port, &["SAVE"]), "OK");

    // The arrival of 7 commits: its delete of the cached 5 was acknowledged.
    app.produce(0, vec![Ev::arrival(Uuid::new_v4(), w, p, 7).bytes()])
        .await;
    app.wait_consumed().await;
    for _ in 0..3 {
        assert_eq!(quantity(app.get_json(&path).await.1), 12);
    }

    // From here on every read must answer 12.
    let watch = Watch::start(Arc::clone(&app), path.clone(), 12);
    let run_before = run_id(port);
    let lost_at = Instant::now();
    match loss {
        Loss::Restart => {
            redis.kill();
            redis = OwnRedis::start_with(port, &options).await;
            assert_ne!(run_id(port), run_before, "a new process");
        }
        Loss::Reload => {
            assert_eq!(redis_cli(port, &["DEBUG", "RELOAD", "NOSAVE"]), "OK");
            assert_eq!(run_id(port), run_before, "the same process");
        }
    }
    // The test would fail without the epoch's checks: the 5 is back in
    // Redis, under the key and the epoch it had.
    let back = eventually(10, || async { peek.entry(key, epoch).await }).await;
    assert_eq!(back, cached_five, "Redis brought the older entry back");

    // Caching resumes, in a new epoch, and every answer until then was 12.
    let hits = cache_hits(&app).await;
    let resumed = eventually(20, || async {
        (cache_hits(&app).await > hits).then(|| lost_at.elapsed())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (reads, wrong) = watch.stop().await;
    let stale = wrong.len();
    let now = app.cache_epoch().await;
    println!(
        "{loss:?}: {reads} reads, {stale} not 12; cache hits again {resumed:?} after the loss; \
         epoch {epoch} -> {now}"
    );
    assert_eq!(
        stale, 0,
        "{stale} of {reads} reads did not answer 12: {wrong:?}"
    );
    assert!(reads > 20, "only {reads} reads");
    assert_ne!(now, epoch, "a new cache epoch began");
    if let Some(entry) = peek.entry(key, now).await {
        assert!(entry.contains("\"quantity\":12"), "{entry}");
    }
    let cause = match loss {
        Loss::Restart => "marker",
        Loss::Reload => "flush",
    };
    let m = scrape(&app).await;
    assert!(
        m.value("wm_cache_distrusted_total", &[("cause", cause)]) >= 1.0,
        "detected by the {cause}"
    );
    assert!(m.value("wm_cache_epochs_begun_total", &[]) >= 1.0);
    drop(redis);
    Arc::try_unwrap(app).ok().expect("reader done").stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_from_an_older_snapshot_never_serves_what_it_lost() {
    lost_writes_are_never_served(Loss::Restart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_reload_of_an_older_dump_never_serves_what_it_lost() {
    lost_writes_are_never_served(Loss::Reload).await;
}
