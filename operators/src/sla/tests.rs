use super::*;

const DAY: u64 = 24 * HOUR;
/// 2026-11-01T00:00:00Z.
const NOV1: u64 = 1_793_491_200 * 1_000_000_000;

fn tracker(target: f64) -> SlaTracker {
    SlaTracker::new(SlaConfig {
        name: "dwcp-availability".into(),
        kind: SlaKind::Availability,
        target,
        period_days: 30,
    })
}

/// 30 days of 1,000 requests a minute, all good but for a 40-minute total outage starting at
/// `outage_start` minutes into the period.
fn month_with_outage(t: &mut SlaTracker, outage_start: u64) {
    for m in 0..30 * 24 * 60u64 {
        let bad = (outage_start..outage_start + 40).contains(&m);
        let at = NOV1 + m * MINUTE + 30_000_000_000;
        t.observe(at, if bad { 0.0 } else { 1000.0 }, 1000.0);
        if m % 60 == 59 {
            t.on_watermark(NOV1 + (m + 1) * MINUTE);
        }
    }
    t.on_watermark(NOV1 + 30 * DAY);
}

#[test]
fn a_40_minute_outage_against_99_95_percent_over_30_days() {
    let mut t = tracker(0.9995);
    month_with_outage(&mut t, 10 * 24 * 60);
    let r = t.report();
    // Hand-computed: 43,200 minutes × 1,000 requests, 40,000 bad.
    let total = 43_200_000.0;
    let bad = 40_000.0;
    assert!((r.compliance - (1.0 - bad / total)).abs() < 1e-12, "{}", r.compliance);
    assert!(!r.compliant);
    assert!((r.budget_allowed - 0.0005).abs() < 1e-15);
    // Budget: 0.05 % of 30 days = 21.6 minutes; 40 minutes spent: 1.8519 of it.
    assert!(
        (r.budget_consumed - (bad / total) / 0.0005).abs() < 1e-9,
        "{}",
        r.budget_consumed
    );
    assert!(
        (r.budget_remaining_seconds - (21.6 - 40.0) * 60.0).abs() < 1e-6,
        "{}",
        r.budget_remaining_seconds
    );
    // The month is November: the same figures.
    assert!((r.month_compliance - r.compliance).abs() < 1e-12);
    // One violation of exactly 40 minutes, worst share 0.
    assert_eq!(r.violations.len(), 1);
    let v = &r.violations[0];
    assert_eq!(v.start, NOV1 + 10 * DAY);
    assert_eq!(v.end, Some(NOV1 + 10 * DAY + 40 * MINUTE));
    assert_eq!(v.worst, 0.0);
    // Twenty days later every short window is clean, so no alert; the 3d window holds no bad minute.
    assert!(r.burn_rates.iter().all(|(_, b)| *b == 0.0), "{:?}", r.burn_rates);
    assert_eq!(r.alert, None);
}

#[test]
fn burn_rates_and_multiwindow_alerts() {
    let mut t = tracker(0.999);
    // Six hours of clean traffic, then 10 minutes at 5 % errors: burn 50× over 5m and 10m of 60m.
    for m in 0..360u64 {
        t.observe(NOV1 + m * MINUTE, 1000.0, 1000.0);
    }
    for m in 360..370u64 {
        t.observe(NOV1 + m * MINUTE, 950.0, 1000.0);
    }
    t.on_watermark(NOV1 + 370 * MINUTE);
    let r = t.report();
    let b = |n: &str| r.burn_rates.iter().find(|(k, _)| k == n).expect("window").1;
    // 5m: 5 % bad / 0.1 % allowed = 50.
    assert!((b("5m") - 50.0).abs() < 1e-6, "{}", b("5m"));
    // 1h: 10 bad minutes of 60 → 500 bad of 60,000 = 0.8333 % → 8.333.
    assert!((b("1h") - 500.0 / 60_000.0 / 0.001).abs() < 1e-6, "{}", b("1h"));
    // 1h is under 14.4, but 6h (500 / 360,000 → 1.389) is under 6: only a ticket? 3d = 6h here.
    assert_eq!(r.alert, Some(BurnAlert::Ticket));
    // Forty more minutes at 5 %: 1h burns 50 × 50/60 = 41.7 and 5m 50: page.
    for m in 370..410u64 {
        t.observe(NOV1 + m * MINUTE, 950.0, 1000.0);
    }
    t.on_watermark(NOV1 + 410 * MINUTE);
    assert_eq!(t.report().alert, Some(BurnAlert::Page));
}

#[test]
fn snapshot_and_restore_give_the_same_report_and_state_stays_compact() {
    let mut t = tracker(0.9995);
    month_with_outage(&mut t, 29 * 24 * 60);
    let json = serde_json::to_string(&t).expect("serialize");
    let restored: SlaTracker = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(restored.report(), t.report());
    // 6 hours of minutes and 30 days of hours: about 13 KiB.
    assert!(t.state_bytes() <= 16 * 1024, "{} bytes", t.state_bytes());
    // The outage was in the last day: the 3d burn rate sees it.
    let r = t.report();
    let b3d = r.burn_rates.iter().find(|(k, _)| k == "3d").expect("3d").1;
    assert!((b3d - 40_000.0 / 4_320_000.0 / 0.0005).abs() < 1e-6, "{b3d}");
}

#[test]
fn calendar_month_starts_over() {
    let mut t = tracker(0.99);
    t.observe(NOV1 - HOUR, 0.0, 100.0); // October 31st: all bad
    t.observe(NOV1 + HOUR, 100.0, 100.0); // November 1st: all good
    let r = t.report();
    assert_eq!(r.month_compliance, 1.0);
    assert_eq!(r.compliance, 0.5);
}
