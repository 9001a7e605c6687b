use super::*;

fn setting(name: &str, value: &str, unit: Option<&str>) -> ServerSetting {
    ServerSetting {
        name: name.into(),
        setting: value.into(),
        unit: unit.map(Into::into),
    }
}

/// pg_settings as PostgreSQL 15 prints them.
fn wal(max_wal_size_mb: &str, compression: &str, timeout_secs: &str) -> Vec<ServerSetting> {
    vec![
        setting("max_wal_size", max_wal_size_mb, Some("MB")),
        setting("wal_compression", compression, None),
        setting("checkpoint_timeout", timeout_secs, Some("s")),
    ]
}

#[test]
fn debian_defaults_give_one_finding_per_setting() {
    let findings = judge_postgres(&wal("1024", "off", "300")).unwrap();
    assert_eq!(
        findings,
        vec![
            Finding::WalBudget {
                max_wal_size_mb: 1024
            },
            Finding::WalUncompressed,
            Finding::CheckpointsFrequent {
                checkpoint_timeout_secs: 300
            },
        ]
    );
    let text = findings[0].to_string();
    assert!(text.contains("max_wal_size is 1 GB, below 4 GB"), "{text}");
    let text = findings[2].to_string();
    assert!(
        text.contains("checkpoint_timeout is 5 min, below 10 min"),
        "{text}"
    );
}

#[test]
fn the_shipped_settings_give_none() {
    assert_eq!(judge_postgres(&wal("16384", "lz4", "900")).unwrap(), vec![]);
}

#[test]
fn thresholds_are_inclusive_of_the_floor() {
    assert_eq!(judge_postgres(&wal("4096", "pglz", "600")).unwrap(), vec![]);
    assert_eq!(
        judge_postgres(&wal("4095", "zstd", "599")).unwrap(),
        vec![
            Finding::WalBudget {
                max_wal_size_mb: 4095
            },
            Finding::CheckpointsFrequent {
                checkpoint_timeout_secs: 599
            },
        ]
    );
}

#[test]
fn every_compression_but_off_counts_as_on() {
    for on in ["pglz", "lz4", "zstd", "on", "true"] {
        let settings = [setting("wal_compression", on, None)];
        assert_eq!(judge_postgres(&settings).unwrap(), vec![], "{on}");
    }
    // A boolean before PostgreSQL 15.
    for off in ["off", "false"] {
        let settings = [setting("wal_compression", off, None)];
        assert_eq!(
            judge_postgres(&settings).unwrap(),
            vec![Finding::WalUncompressed],
            "{off}"
        );
    }
}

#[test]
fn values_are_read_in_the_unit_the_server_gives() {
    // PostgreSQL 9.5 counted max_wal_size in 16 MB segments.
    let old = [setting("max_wal_size", "64", Some("16MB"))];
    assert_eq!(
        judge_postgres(&old).unwrap(),
        vec![Finding::WalBudget {
            max_wal_size_mb: 1024
        }]
    );
    let in_min = [setting("checkpoint_timeout", "15", Some("min"))];
    assert_eq!(judge_postgres(&in_min).unwrap(), vec![]);
    let in_ms = [setting("checkpoint_timeout", "300000", Some("ms"))];
    assert_eq!(
        judge_postgres(&in_ms).unwrap(),
        vec![Finding::CheckpointsFrequent {
            checkpoint_timeout_secs: 300
        }]
    );
    assert_eq!(bytes("16384", Some("8kB")), Some(128 << 20));
    let strange = [setting("max_wal_size", "1", Some("furlongs"))];
    let e = judge_postgres(&strange).unwrap_err().to_string();
    assert!(e.contains("max_wal_size") && e.contains("furlongs"), "{e}");
}

#[test]
fn redis_needs_a_limit_and_a_policy_that_evicts() {
    let redis = |maxmemory: u64, policy: &str| {
        judge_redis(&Eviction {
            maxmemory,
            policy: policy.into(),
        })
    };
    assert_eq!(redis(0, "noeviction"), Some(Finding::RedisUnbounded));
    assert_eq!(redis(0, "allkeys-lru"), Some(Finding::RedisUnbounded));
    assert_eq!(
        redis(64 << 20, "noeviction"),
        Some(Finding::RedisNoEviction {
            maxmemory: 64 << 20
        })
    );
    for evicts in ["allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-ttl"] {
        assert_eq!(redis(64 << 20, evicts), None, "{evicts}");
    }
    let text = redis(64 << 20, "noeviction").unwrap().to_string();
    assert!(text.contains("(64 MB)"), "{text}");
}

#[test]
fn an_offset_below_the_log_start_is_found_and_one_at_it_is_not() {
    let stored = |next_offset| offsets::Stored {
        partition: 2,
        next_offset,
        age_secs: 3 * 86_400 + 5,
    };
    let found = judge_offset(&stored(120), 500).unwrap();
    assert_eq!(
        found,
        Finding::RetentionPassed {
            partition: 2,
            stored: 120,
            log_start: 500,
            age_secs: 3 * 86_400 + 5
        }
    );
    let text = found.to_string();
    assert!(
        text.contains("partition 2: the stored offset 120 is below the log start 500")
            && text.contains("offsets 120 to 499")
            && text.contains("3 d ago"),
        "{text}"
    );
    assert_eq!(judge_offset(&stored(500), 500), None);
    assert_eq!(judge_offset(&stored(900), 500), None);
}

#[test]
fn the_exit_code_says_warnings_first_then_checks_that_could_not_run() {
    let mut report = Report::default();
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.to_string(), "no warning\n");
    report
        .unchecked
        .push(CheckError::Timeout("Redis memory settings"));
    assert_eq!(report.exit_code(), 4);
    report.findings.push(Finding::RedisUnbounded);
    assert_eq!(report.exit_code(), 3);
    let printed = report.to_string();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 3, "{printed}");
    assert!(lines[0].starts_with("warning [redis_unbounded]: Redis has no maxmemory"));
    assert!(lines[1].starts_with("info: Redis memory settings not checked: no answer"));
    assert_eq!(lines[2], "1 warning(s); 1 check(s) could not run");
}

#[test]
fn ages_and_durations_read_in_their_largest_unit() {
    assert_eq!(duration(300), "5 min");
    assert_eq!(duration(90), "90 s");
    assert_eq!(duration(7200), "2 h");
    assert_eq!(age(45), "45 s");
    assert_eq!(age(3600), "60 min");
    assert_eq!(age(-1), "0 s");
    assert_eq!(megabytes(16384), "16 GB");
    assert_eq!(megabytes(1500), "1500 MB");
}
