//! The counters on /metrics equal a known stream; histograms and lag exist.

use super::*;

#[tokio::test]
pub(super) async fn counters_match_a_known_stream_and_histograms_and_lag_are_exported() {
    let app = TestApp::spawn(2).await;
    let before = scrape(&app).await;
    for reason in REASONS {
        let v = before.value("wm_events_rejected_total", &[("reason", reason)]);
        assert_eq!(v, 0.0, "{reason} is pre-registered at 0");
    }
    let produced = known_stream(&app).await;

    let m = settled(&app, produced).await;
    assert_eq!(
        m.value("wm_events_consumed_total", &[]),
        f64::from(produced)
    );
    assert_eq!(m.value("wm_events_applied_total", &[]), 6.0);
    assert_eq!(m.value("wm_events_duplicate_total", &[]), 2.0);
    for (i, reason) in (0..).zip(REASONS) {
        let v = m.value("wm_events_rejected_total", &[("reason", reason)]);
        let expected = if i < STREAM_REASONS { 1.0 } else { 0.0 };
        assert_eq!(v, expected, "wm_events_rejected_total{{reason={reason:?}}}");
    }
    // Three departures, none arrived: three stock rows went below zero.
    assert_eq!(m.value("wm_stock_negative_updates_total", &[]), 3.0);

    for family in [
        "wm_batch_size",
        "wm_batch_apply_duration_seconds",
        "wm_event_commit_delay_seconds",
    ] {
        assert_eq!(m.types.get(family).map(String::as_str), Some("histogram"));
        let inf = m.value(&format!("{family}_bucket"), &[("le", "+Inf")]);
        assert_eq!(inf, m.value(&format!("{family}_count"), &[]), "{family}");
        assert!(inf >= 1.0, "{family} has observations");
        m.value(&format!("{family}_sum"), &[]);
    }
    // One observation per committed batch; the sizes add up to the records.
    let batches: f64 = m
        .find("wm_batches_committed_total", &[])
        .map(|s| s.value)
        .sum();
    assert_eq!(m.value("wm_batch_size_count", &[]), batches);
    assert_eq!(m.value("wm_batch_size_sum", &[]), f64::from(produced));
    assert_eq!(
        m.value("wm_batch_apply_duration_seconds_count", &[]),
        batches
    );

    // Lag per partition, 0 once everything is committed.
    for p in ["0", "1"] {
        assert_eq!(m.value("wm_consumer_lag", &[("partition", p)]), 0.0);
    }
    let kind = m.types.get("wm_consumer_lag").map(String::as_str);
    assert_eq!(kind, Some("gauge"));
    // Offsets: partition 0 got 3 good, 1 duplicate and 6 rejected; 1 got 4.
    for (p, next) in [("0", 10.0), ("1", 4.0)] {
        let committed = m.value("wm_consumer_committed_offset", &[("partition", p)]);
        assert_eq!(committed, next, "partition {p}");
    }
    for pool in ["batches", "reads", "ownership"] {
        m.value(
            "wm_db_pool_connections",
            &[("pool", pool), ("state", "in_use")],
        );
    }
    app.stop().await;
}

// ------------------------------------------------------------ dashboard
