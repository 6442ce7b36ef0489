//! The Numenta Anomaly Benchmark's scoring: each labeled window's first detection earns
//! `tp × sigmoid(y)` with `y = −1` at the window's start and 0 at its end; a detection outside
//! every window costs `fp × sigmoid(y)` with `y` its distance after the closest preceding window
//! in window lengths (−fp with no preceding window); a missed window costs `−fn`; detections in
//! the probationary first 15 % of a file (at most 750 records) do not count. Scores are
//! normalized over a corpus so that detecting nothing scores 0 and detecting every window at its
//! first record scores 100.

/// A profile's weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Name as NAB writes it.
    pub name: &'static str,
    /// True positive weight.
    pub tp: f64,
    /// False positive weight.
    pub fp: f64,
    /// False negative weight.
    pub fn_: f64,
}

/// NAB's three profiles.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FP_rate",
        tp: 1.0,
        fp: 0.22,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FN_rate",
        tp: 1.0,
        fp: 0.11,
        fn_: 2.0,
    },
];

/// NAB's scaled sigmoid: `2 / (1 + e^(5y)) − 1`, and −1 beyond y = 3.
pub fn sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// One file's score parts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FileScore {
    /// The detector's raw score.
    pub raw: f64,
    /// Detecting nothing.
    pub null: f64,
    /// Detecting every window at its first record.
    pub perfect: f64,
    /// Windows detected.
    pub true_positives: usize,
    /// Detections outside windows.
    pub false_positives: usize,
    /// Windows missed.
    pub false_negatives: usize,
}

impl std::ops::AddAssign for FileScore {
    fn add_assign(&mut self, o: Self) {
        self.raw += o.raw;
        self.null += o.null;
        self.perfect += o.perfect;
        self.true_positives += o.true_positives;
        self.false_positives += o.false_positives;
        self.false_negatives += o.false_negatives;
    }
}

impl FileScore {
    /// `100 × (raw − null) / (perfect − null)`.
    pub fn normalized(&self) -> f64 {
        if self.perfect == self.null {
            return 0.0;
        }
        100.0 * (self.raw - self.null) / (self.perfect - self.null)
    }
}

/// The probationary period of a file of `n` records.
pub fn probation(n: usize) -> usize {
    (n * 15 / 100).min(750)
}

/// Scores detections (record indices) against windows (inclusive record index ranges, sorted)
/// in a file of `n` records.
#[allow(clippy::cast_precision_loss)]
pub fn score_file(n: usize, windows: &[(usize, usize)], detections: &[usize], p: Profile) -> FileScore {
    let mut s = FileScore {
        null: -p.fn_ * windows.len() as f64,
        perfect: p.tp * sigmoid(-1.0) * windows.len() as f64,
        ..FileScore::default()
    };
    let prob = probation(n);
    let mut detected = vec![false; windows.len()];
    let len = |(a, b): (usize, usize)| (b.saturating_sub(a)).max(1) as f64;
    for &d in detections {
        if d < prob {
            continue;
        }
        if let Some(w) = windows.iter().position(|&(a, b)| d >= a && d <= b) {
            if !detected[w] {
                detected[w] = true;
                let (_, b) = windows[w];
                let y = (d as f64 - b as f64) / len(windows[w]);
                s.raw += p.tp * sigmoid(y);
                s.true_positives += 1;
            }
            continue;
        }
        s.false_positives += 1;
        match windows.iter().rev().find(|&&(_, b)| b < d) {
            Some(&w) => {
                let y = (d as f64 - w.1 as f64) / len(w);
                s.raw += p.fp * sigmoid(y);
            }
            None => s.raw -= p.fp,
        }
    }
    let missed = detected.iter().filter(|d| !**d).count();
    s.false_negatives = missed;
    s.raw -= p.fn_ * missed as f64;
    s
}

/// Detections from per-record scores: the first record of each run at or above `threshold`,
/// a run ending after `gap` records below it (one detection per episode, as the detector emits).
pub fn detections(scores: &[f64], threshold: f64, gap: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut open = false;
    let mut below = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s >= threshold {
            if !open {
                out.push(i);
                open = true;
            }
            below = 0;
        } else if open {
            below += 1;
            if below >= gap {
                open = false;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STD: Profile = PROFILES[0];

    #[test]
    fn an_early_detection_scores_near_the_maximum_and_a_late_one_less() {
        // 1,000 records, probation 150; one window [500, 599].
        let w = [(500, 599)];
        let early = score_file(1000, &w, &[500], STD);
        assert!((early.raw - sigmoid(-1.0)).abs() < 1e-12);
        assert!((sigmoid(-1.0) - 0.986_614_298_151_430_3).abs() < 1e-12);
        assert!((early.normalized() - 100.0).abs() < 1e-9);
        let late = score_file(1000, &w, &[590], STD);
        // y = (590 − 599) / 99 = −0.0909: sigmoid = 2 / (1 + e^−0.4545) − 1 = 0.2234.
        let y: f64 = -9.0 / 99.0;
        assert!((late.raw - (2.0 / (1.0 + (5.0 * y).exp()) - 1.0)).abs() < 1e-12);
        assert!(late.raw < early.raw && late.raw > 0.0);
        // Only the first detection of a window counts.
        assert_eq!(score_file(1000, &w, &[500, 510, 520], STD).raw, early.raw);
    }

    #[test]
    fn false_positives_cost_their_weight_and_misses_their_penalty() {
        let w = [(500, 599)];
        // Before any window: −fp exactly.
        let fp = score_file(1000, &w, &[200, 500], STD);
        assert!((fp.raw - (sigmoid(-1.0) - 0.11)).abs() < 1e-12);
        assert_eq!(fp.false_positives, 1);
        // Right after the window: cheap; far after: nearly −fp.
        let near = score_file(1000, &w, &[500, 600], STD).raw - sigmoid(-1.0);
        let far = score_file(1000, &w, &[500, 950], STD).raw - sigmoid(-1.0);
        assert!(near > -0.02 && near < 0.0, "{near}");
        assert!((-0.11..-0.109).contains(&far), "{far}");
        // Low-FP profile doubles the cost.
        let fp2 = score_file(1000, &w, &[200, 500], PROFILES[1]);
        assert!((fp2.raw - (sigmoid(-1.0) - 0.22)).abs() < 1e-12);
        // A missed window: −fn, −2 with reward_low_FN_rate; nothing scores 0 normalized.
        assert_eq!(score_file(1000, &w, &[], STD).raw, -1.0);
        assert_eq!(score_file(1000, &w, &[], PROFILES[2]).raw, -2.0);
        assert_eq!(score_file(1000, &w, &[], STD).normalized(), 0.0);
        // Detections in the probationary period do not count.
        assert_eq!(score_file(1000, &w, &[100], STD).raw, -1.0);
    }

    #[test]
    fn one_detection_per_run() {
        let s = [0.0, 0.6, 0.7, 0.1, 0.6, 0.0, 0.0, 0.0, 0.9];
        assert_eq!(detections(&s, 0.5, 3), vec![1, 8]);
        assert_eq!(detections(&s, 0.5, 1), vec![1, 4, 8]);
    }
}
