//! An isolation forest (Liu, Ting and Zhou, 2008) over feature vectors of recent points, one per
//! group of series (its settings), retrained on a schedule off the stream's thread.
//!
//! A point's features describe it against its series' recent window, so one forest serves every
//! series of a group: its distance from the window mean and from the short moving average and
//! its step from the previous point (each in the window's standard deviations), the short
//! window's deviation over the long one's, and the hour of the day. Anomalous points are isolated
//! by fewer random splits: the score `2^(−E[h(x)] / c(ψ))` is near 1 for them, at most about 0.5
//! for ordinary ones.
//!
//! Training: every `forest_retrain_points` points per series of the group, a copy of the last
//! `forest_buffer` feature vectors goes to a new thread that builds `forest_trees` trees of
//! `forest_sample` vectors each; the stream goes on with the previous forest. The new forest
//! takes over `forest_install_points` points per series later (a group of 10,000 series
//! retrains every 10 M points, and has 640,000 points' time to train) (if it were not built by then, the stream
//! would wait for it: counted in [`ForestState::waits`]), so where a forest changes depends on
//! the data only, and a restored snapshot (which carries the forest, the buffer and a pending
//! training's input and seed) scores as an uninterrupted run does.

use std::collections::VecDeque;
use std::sync::Arc;

use ndarray::{Array2, ArrayView1};
use serde::{Deserialize, Serialize};

use super::AnomalyConfig;

/// Features per point.
pub const FEATURES: usize = 5;

/// The index of the hour-of-day feature.
const HOUR: usize = 4;

/// One point's features.
pub type Features = [f32; FEATURES];

/// A node: a split on `feature` at `threshold` (children `left`, `right`) of vectors whose
/// `feature` spans `[lo, hi]`, or a leaf of `left` training vectors (`feature` = [`LEAF`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Node {
    feature: u8,
    threshold: f32,
    lo: f32,
    hi: f32,
    left: u32,
    right: u32,
}

const LEAF: u8 = u8::MAX;

/// A trained forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    trees: Vec<Vec<Node>>,
    sample: usize,
}

/// The average path length of an unsuccessful search in a binary search tree of `n` keys:
/// `c(n) = 2 H(n − 1) − 2 (n − 1) / n`.
#[allow(clippy::cast_precision_loss)]
fn average_path(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

/// SplitMix64: small, fast, and the same sequence on every platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)`.
    #[allow(clippy::cast_possible_truncation)]
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    #[allow(clippy::cast_precision_loss)]
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

impl Forest {
    /// Builds `trees` trees, each from `sample` rows of `data` drawn without replacement.
    pub fn train(data: &Array2<f32>, trees: usize, sample: usize, seed: u64) -> Forest {
        let mut rng = Rng(seed);
        let n = data.nrows();
        let sample = sample.clamp(1, n.max(1));
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let limit = (sample as f64).log2().ceil().max(1.0) as usize;
        let mut out = Vec::with_capacity(trees);
        let mut rows: Vec<usize> = (0..n).collect();
        for _ in 0..trees {
            // A partial Fisher-Yates shuffle puts the tree's sample first.
            for i in 0..sample.min(n) {
                let j = i + rng.below(n - i);
                rows.swap(i, j);
            }
            let mut idx = rows[..sample.min(n)].to_vec();
            let mut nodes = Vec::with_capacity(2 * sample);
            grow(data, &mut idx, 0, limit, &mut rng, &mut nodes);
            out.push(nodes);
        }
        Forest { trees: out, sample }
    }

    /// The isolation score of `x` in (0, 1].
    ///
    /// A point outside the range `[lo, hi]` a split saw (on any feature but the hour) would have
    /// been cut off there with the probability a random cut over the range widened to include it falls between the point
    /// and the range (as a random cut forest inserts a point): its path length is that
    /// expectation. So a point far beyond everything trained on scores as the outlier it is,
    /// not as the most extreme training vector.
    pub fn score(&self, x: &Features) -> f64 {
        if self.trees.is_empty() {
            return 0.0;
        }
        let mut total = 0.0;
        for nodes in &self.trees {
            let (mut i, mut depth, mut weight) = (0usize, 0.0, 1.0);
            while let Some(node) = nodes.get(i) {
                if node.feature == LEAF {
                    total += weight * (depth + average_path(node.left as usize));
                    break;
                }
                let v = x.get(usize::from(node.feature)).copied().unwrap_or(0.0);
                // Not for the hour of the day: a buffer spanning minutes (a busy group) would
                // make every later hour look beyond the range.
                let outside = if usize::from(node.feature) == HOUR {
                    0.0
                } else if v < node.lo {
                    node.lo - v
                } else if v > node.hi {
                    v - node.hi
                } else {
                    0.0
                };
                if outside > 0.0 {
                    let p = f64::from(outside / (node.hi - node.lo + outside));
                    total += weight * p * (depth + 1.0);
                    weight *= 1.0 - p;
                }
                depth += 1.0;
                i = if v < node.threshold { node.left } else { node.right } as usize;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let mean = total / self.trees.len() as f64;
        2f64.powf(-mean / average_path(self.sample).max(1e-9))
    }

    /// Nodes in all trees.
    pub fn nodes(&self) -> usize {
        self.trees.iter().map(Vec::len).sum()
    }
}

/// Grows the subtree of the rows `idx` at `depth` into `nodes`; returns its root's index.
fn grow(
    data: &Array2<f32>,
    idx: &mut [usize],
    depth: usize,
    limit: usize,
    rng: &mut Rng,
    nodes: &mut Vec<Node>,
) -> u32 {
    let at = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
    let leaf = |size: usize| Node {
        feature: LEAF,
        threshold: 0.0,
        lo: 0.0,
        hi: 0.0,
        left: u32::try_from(size).unwrap_or(u32::MAX),
        right: 0,
    };
    if depth >= limit || idx.len() <= 1 {
        nodes.push(leaf(idx.len()));
        return at;
    }
    // A random feature that still varies among these rows, from a random start.
    let first = rng.below(FEATURES);
    let mut split = None;
    for k in 0..FEATURES {
        let f = (first + k) % FEATURES;
        let column: ArrayView1<f32> = data.column(f);
        let (lo, hi) = idx.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &r| {
            (lo.min(column[r]), hi.max(column[r]))
        });
        if lo < hi {
            split = Some((f, lo + rng.unit() * (hi - lo), lo, hi, column));
            break;
        }
    }
    let Some((f, threshold, lo, hi, column)) = split else {
        nodes.push(leaf(idx.len()));
        return at;
    };
    // Partition: rows below the threshold first.
    let mut mid = 0;
    for i in 0..idx.len() {
        if column[idx[i]] < threshold {
            idx.swap(i, mid);
            mid += 1;
        }
    }
    if mid == 0 || mid == idx.len() {
        nodes.push(leaf(idx.len()));
        return at;
    }
    nodes.push(Node {
        feature: u8::try_from(f).unwrap_or(0),
        threshold,
        lo,
        hi,
        left: 0,
        right: 0,
    });
    let (l, r) = idx.split_at_mut(mid);
    let left = grow(data, l, depth + 1, limit, rng, nodes);
    let right = grow(data, r, depth + 1, limit, rng, nodes);
    if let Some(n) = nodes.get_mut(at as usize) {
        n.left = left;
        n.right = right;
    }
    at
}

/// A training under way: its input and seed (what a snapshot keeps), and the thread.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    install_at: u64,
    rows: Vec<Features>,
    seed: u64,
    #[serde(skip)]
    thread: Option<std::thread::JoinHandle<Forest>>,
}

impl Pending {
    fn start(&mut self, config: &AnomalyConfig) {
        if self.thread.is_some() {
            return;
        }
        let rows = self.rows.clone();
        let (trees, sample, seed) = (config.forest_trees, config.forest_sample, self.seed);
        self.thread = std::thread::Builder::new()
            .name("dwcp-forest".into())
            .spawn(move || Forest::train(&matrix(&rows), trees, sample, seed))
            .ok();
    }

    /// The trained forest: the thread's, or built here when there is none (it could not be
    /// spawned).
    fn finish(mut self, config: &AnomalyConfig) -> (Forest, bool) {
        match self.thread.take().map(|t| (t.is_finished(), t.join())) {
            Some((finished, Ok(forest))) => (forest, !finished),
            _ => {
                let forest = Forest::train(
                    &matrix(&self.rows),
                    config.forest_trees,
                    config.forest_sample,
                    self.seed,
                );
                (forest, true)
            }
        }
    }
}

fn matrix(rows: &[Features]) -> Array2<f32> {
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Array2::from_shape_vec((rows.len(), FEATURES), flat).unwrap_or_else(|_| Array2::zeros((0, FEATURES)))
}

/// A group's forest: the model in use, the recent feature vectors, the schedule.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ForestState {
    model: Option<Arc<Forest>>,
    buffer: VecDeque<Features>,
    points: u64,
    next_train: u64,
    trainings: u64,
    pending: Option<Pending>,
    /// Installs that had to wait for their training to finish.
    #[serde(default)]
    pub waits: u64,
    /// Series in the group: the schedule's points are per series.
    #[serde(default)]
    pub series: u64,
}

impl ForestState {
    /// Scores `x` with the forest in use (`None` before the first one), then keeps it for
    /// training and runs the schedule.
    pub fn observe(&mut self, config: &AnomalyConfig, x: Features) -> Option<f64> {
        self.points += 1;
        if self.pending.as_ref().is_some_and(|p| self.points >= p.install_at) {
            if let Some(p) = self.pending.take() {
                let (forest, waited) = p.finish(config);
                self.waits += u64::from(waited);
                self.model = Some(Arc::new(forest));
            }
        }
        let score = self.model.as_ref().map(|m| m.score(&x));
        if self.buffer.len() >= config.forest_buffer.max(1) {
            self.buffer.pop_front();
        }
        self.buffer.push_back(x);
        if self.pending.is_none() && self.points >= self.next_train && self.buffer.len() >= config.forest_sample.max(1)
        {
            self.trainings += 1;
            let per = self.series.max(1);
            self.next_train = self.points + (config.forest_retrain_points.max(1) as u64).saturating_mul(per);
            self.pending = Some(Pending {
                install_at: self.points + (config.forest_install_points as u64).saturating_mul(per),
                rows: self.buffer.iter().copied().collect(),
                seed: 0x5eed_0000_0000_0000 ^ self.trainings,
                thread: None,
            });
        }
        // A training restored from a snapshot starts again here, with the same input and seed.
        if let Some(p) = &mut self.pending {
            p.start(config);
        }
        score
    }

    /// Whether a forest is in use.
    pub fn trained(&self) -> bool {
        self.model.is_some()
    }

    /// Trainings started so far.
    pub fn trainings(&self) -> u64 {
        self.trainings
    }

    /// Bytes held: the forest's nodes and the buffer.
    pub fn state_bytes(&self) -> usize {
        self.model
            .as_ref()
            .map_or(0, |m| m.nodes() * std::mem::size_of::<Node>())
            + self.buffer.capacity() * std::mem::size_of::<Features>()
    }
}

impl Clone for ForestState {
    /// A copy without the training thread (it starts again, deterministically, when used).
    fn clone(&self) -> Self {
        ForestState {
            model: self.model.clone(),
            buffer: self.buffer.clone(),
            points: self.points,
            next_train: self.next_train,
            trainings: self.trainings,
            pending: self.pending.as_ref().map(|p| Pending {
                install_at: p.install_at,
                rows: p.rows.clone(),
                seed: p.seed,
                thread: None,
            }),
            waits: self.waits,
            series: self.series,
        }
    }
}

impl PartialEq for ForestState {
    fn eq(&self, other: &Self) -> bool {
        self.model == other.model
            && self.buffer == other.buffer
            && (self.points, self.next_train, self.trainings) == (other.points, other.next_train, other.trainings)
            && self.pending.as_ref().map(|p| (p.install_at, &p.rows, p.seed))
                == other.pending.as_ref().map(|p| (p.install_at, &p.rows, p.seed))
    }
}

/// The features of `x` against a series' window (`mean`, `std` over the long window, `ma` and
/// `short_std` over the short one, `prev` the previous point) at `hour` of the day.
#[allow(clippy::cast_possible_truncation)]
pub fn features(x: f64, prev: f64, mean: f64, std: f64, ma: f64, short_std: f64, hour: f64) -> Features {
    let clamp = |v: f64| v.clamp(-50.0, 50.0) as f32;
    [
        clamp((x - mean) / std),
        clamp((x - prev) / std),
        clamp((x - ma) / std),
        clamp(short_std / std),
        hour as f32,
    ]
}
