//! The alert rules, checked by Prometheus's own tool: `promtool test rules`
//! runs `observability/alerts.test.yml` (series in, alerts out) against the
//! committed `observability/alerts.yml`.

use super::*;

#[test]
fn the_alert_rules_pass_their_promtool_tests() {
    let promtool = prometheus::prometheus_binary().with_file_name("promtool");
    assert!(
        promtool.is_file(),
        "{} missing: run scripts/stack.sh up (apt package prometheus)",
        promtool.display()
    );
    let output = Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(repo().join("observability"))
        .output()
        .expect("promtool runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    println!("{text}");
    assert!(
        output.status.success(),
        "promtool test rules failed:\n{text}"
    );
    assert!(text.contains("SUCCESS"), "{text}");
}
