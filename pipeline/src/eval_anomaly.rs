//! `dwcp-monitor eval-anomaly --data DIR --labels FILE [--profile P]`: the anomaly detectors
//! over CSV series (`timestamp,value`), scored against labeled windows with the Numenta Anomaly
//! Benchmark's method ([`dwcp_operators::nab`]). The detector runs with its default
//! configuration on every file (no per-file tuning); as NAB does, the detection threshold is
//! swept once for the whole corpus per profile, and the score at the default threshold (0.5) is
//! printed too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use dwcp_operators::anomaly::forest::ForestState;
use dwcp_operators::anomaly::{AnomalyConfig, SeriesDetector};
use dwcp_operators::nab::{detections, score_file, FileScore, Profile, PROFILES};

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` as seconds since the epoch (UTC).
pub fn parse_timestamp(s: &str) -> Option<f64> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, mi) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec: f64 = t.next().unwrap_or("0").parse().ok()?;
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    #[allow(clippy::cast_precision_loss)]
    Some((days * 86_400 + h * 3600 + mi * 60) as f64 + sec)
}

/// One scored file.
struct File {
    category: String,
    n: usize,
    windows: Vec<(usize, usize)>,
    scores: Vec<f64>,
}

fn load(data: &Path, key: &str, windows: &[(String, String)], config: &AnomalyConfig) -> Result<File, String> {
    let path = data.join(key);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let (t, v) = line
            .split_once(',')
            .ok_or_else(|| format!("{}:{}: expected timestamp,value", path.display(), i + 1))?;
        let t = parse_timestamp(t).ok_or_else(|| format!("{}:{}: bad timestamp {t:?}", path.display(), i + 1))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| format!("{}:{}: bad value {v:?}", path.display(), i + 1))?;
        points.push((t, v));
    }
    // Each file is a group of its own: its own detector and isolation forest.
    let mut d = SeriesDetector::new(config);
    let mut forest = ForestState::default();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let scores = points
        .iter()
        .map(|(t, v)| {
            d.update_with_forest(config, (t.max(0.0) * 1e9) as u64, *v, Some(&mut forest))
                .0
                .score
        })
        .collect();
    let mut idx = Vec::new();
    for (a, b) in windows {
        let (a, b) = (
            parse_timestamp(a).ok_or_else(|| format!("{key}: bad window start {a:?}"))?,
            parse_timestamp(b).ok_or_else(|| format!("{key}: bad window end {b:?}"))?,
        );
        let first = points.iter().position(|p| p.0 >= a);
        let last = points.iter().rposition(|p| p.0 <= b);
        if let (Some(f), Some(l)) = (first, last) {
            if f <= l {
                idx.push((f, l));
            }
        }
    }
    Ok(File {
        category: key.split('/').next().unwrap_or_default().to_string(),
        n: points.len(),
        windows: idx,
        scores,
    })
}

fn corpus_score(files: &[File], threshold: f64, gap: usize, p: Profile) -> (FileScore, BTreeMap<String, FileScore>) {
    let mut total = FileScore::default();
    let mut by_cat: BTreeMap<String, FileScore> = BTreeMap::new();
    for f in files {
        let s = score_file(f.n, &f.windows, &detections(&f.scores, threshold, gap), p);
        total += s;
        *by_cat.entry(f.category.clone()).or_default() += s;
    }
    (total, by_cat)
}

/// Runs the evaluation; returns the report.
///
/// # Errors
/// When the labels or a data file cannot be read or parsed.
pub fn run(data: &Path, labels: &Path, profile: Option<&str>) -> Result<String, String> {
    let text = std::fs::read_to_string(labels).map_err(|e| format!("{}: {e}", labels.display()))?;
    let windows: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", labels.display()))?;
    let profiles: Vec<Profile> = match profile {
        None => PROFILES.to_vec(),
        Some(name) => {
            let norm = |s: &str| s.to_lowercase().replace("_rate", "");
            vec![*PROFILES
                .iter()
                .find(|p| norm(p.name) == norm(name))
                .ok_or_else(|| format!("--profile {name}: expected standard, reward_low_FP or reward_low_FN"))?]
        }
    };
    // DWCP_ANOMALY_CONFIG: a JSON object of AnomalyConfig fields, to evaluate other settings.
    let config: AnomalyConfig = match std::env::var("DWCP_ANOMALY_CONFIG") {
        Ok(j) => serde_json::from_str(&j).map_err(|e| format!("DWCP_ANOMALY_CONFIG: {e}"))?,
        Err(_) => AnomalyConfig::default(),
    };
    let files: Vec<File> = windows
        .iter()
        .map(|(k, w)| load(data, k, w, &config))
        .collect::<Result<_, _>>()?;
    let mut out = String::new();
    let points: usize = files.iter().map(|f| f.n).sum();
    let nwin: usize = files.iter().map(|f| f.windows.len()).sum();
    let _ = writeln!(out, "{} files, {points} points, {nwin} labeled windows", files.len());
    for p in profiles {
        let (at_default, _) = corpus_score(&files, config.threshold, config.episode_gap, p);
        let mut best = (f64::NEG_INFINITY, 0.0);
        for k in 1..=40 {
            let th = f64::from(k) * 0.025;
            let (s, _) = corpus_score(&files, th, config.episode_gap, p);
            if s.normalized() > best.0 {
                best = (s.normalized(), th);
            }
        }
        let (total, by_cat) = corpus_score(&files, best.1, config.episode_gap, p);
        let _ = writeln!(
            out,
            "\nprofile {}: score {:.1} at threshold {:.3} (swept over the corpus), {:.1} at the configured threshold; TP {} FP {} FN {}",
            p.name,
            total.normalized(),
            best.1,
            at_default.normalized(),
            total.true_positives,
            total.false_positives,
            total.false_negatives
        );
        for (cat, s) in &by_cat {
            let _ = writeln!(
                out,
                "  {cat:<24} {:>6.1}   TP {:>3} FP {:>4} FN {:>3}",
                s.normalized(),
                s.true_positives,
                s.false_positives,
                s.false_negatives
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_as_nab_writes_them() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0.0));
        assert_eq!(parse_timestamp("2014-02-14 14:30:00"), Some(1_392_388_200.0));
        assert_eq!(
            parse_timestamp("2014-02-14 14:30:00.000001"),
            Some(1_392_388_200.000_001)
        );
        assert_eq!(parse_timestamp("2000-03-01 00:00:00"), Some(951_868_800.0));
        assert_eq!(parse_timestamp("garbage"), None);
    }
}
