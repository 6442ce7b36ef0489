//! `write_relabel_configs`: Prometheus' relabeling of outgoing series, per endpoint.
//!
//! The same fields, defaults, validation and semantics as Prometheus' `relabel_config`: the
//! values of `source_labels` joined by `separator` (default `;`) are matched against `regex`
//! (default `(.*)`, anchored at both ends, `.` matching newlines); `replacement` (default `$1`)
//! and `target_label` may use `$1`, `${1}` and `$name`. Actions: `replace` (default), `keep`,
//! `drop`, `keepequal`, `dropequal`, `hashmod` (MD5 of the value, its last 8 bytes big-endian,
//! modulo `modulus`), `labelmap`, `labeldrop`, `labelkeep`, `lowercase`, `uppercase`. A label
//! set to an empty value is removed. A series that a `keep` or `drop` removes, or that is left
//! with no labels, is not sent (and counted).

use std::sync::Arc;

use dwcp_operators::prom::Label;
use md5::{Digest, Md5};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// One step, as written in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined (a missing label is the empty string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<Vec<String>>,
    /// Joins the source values; default `;`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// RE2 syntax, anchored; default `(.*)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Divisor of `hashmod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modulus: Option<u64>,
    /// The label written by `replace`, `hashmod`, `lowercase`, `uppercase`, compared by
    /// `keepequal` and `dropequal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_label: Option<String>,
    /// The value `replace` writes (the new name for `labelmap`); default `$1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// What to do; default `replace`.
    #[serde(default)]
    pub action: RelabelAction,
}

/// The relabeling actions, named as in Prometheus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelabelAction {
    /// Writes `replacement` (expanded) to `target_label` when `regex` matches.
    #[default]
    Replace,
    /// Sends the series only when `regex` matches.
    Keep,
    /// Drops the series when `regex` matches.
    Drop,
    /// Sends the series only when `target_label`'s value equals the joined source values.
    KeepEqual,
    /// Drops the series when `target_label`'s value equals the joined source values.
    DropEqual,
    /// Writes the value's MD5 modulo `modulus` to `target_label`.
    HashMod,
    /// Copies each label whose name matches to the name `replacement` makes of it.
    LabelMap,
    /// Removes each label whose name matches.
    LabelDrop,
    /// Removes each label whose name does not match.
    LabelKeep,
    /// Writes the value lower-cased to `target_label`.
    Lowercase,
    /// Writes the value upper-cased to `target_label`.
    Uppercase,
}

impl RelabelAction {
    fn name(self) -> &'static str {
        match self {
            RelabelAction::Replace => "replace",
            RelabelAction::Keep => "keep",
            RelabelAction::Drop => "drop",
            RelabelAction::KeepEqual => "keepequal",
            RelabelAction::DropEqual => "dropequal",
            RelabelAction::HashMod => "hashmod",
            RelabelAction::LabelMap => "labelmap",
            RelabelAction::LabelDrop => "labeldrop",
            RelabelAction::LabelKeep => "labelkeep",
            RelabelAction::Lowercase => "lowercase",
            RelabelAction::Uppercase => "uppercase",
        }
    }
}

/// A configuration error: the field of the step and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelabelError {
    /// `regex`, `target_label`, ...
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

/// How a step's regex is tested: most written in configurations are a literal, a literal
/// prefix (`dwcp:.*`) or a literal inside `.*`, which a string comparison answers several times
/// faster than the regex engine (it runs once per sample and endpoint).
#[derive(Debug, Clone)]
enum Matcher {
    /// `.*`
    Any,
    /// A literal.
    Exact(String),
    /// `literal.*`
    Prefix(String),
    /// `.*literal.*`
    Contains(String),
    /// Anything else.
    Regex,
}

impl Matcher {
    fn of(src: &str) -> Matcher {
        let literal = |s: &str| regex::escape(s) == s;
        if src == ".*" {
            Matcher::Any
        } else if literal(src) {
            Matcher::Exact(src.into())
        } else if let Some(inner) = src.strip_prefix(".*").and_then(|s| s.strip_suffix(".*")) {
            if literal(inner) {
                Matcher::Contains(inner.into())
            } else {
                Matcher::Regex
            }
        } else if let Some(prefix) = src.strip_suffix(".*") {
            if literal(prefix) {
                Matcher::Prefix(prefix.into())
            } else {
                Matcher::Regex
            }
        } else {
            Matcher::Regex
        }
    }
}

/// A validated, compiled step.
#[derive(Debug, Clone)]
pub struct Relabel {
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
    matcher: Matcher,
    default_regex: bool,
    modulus: u64,
    target_label: String,
    replacement: String,
    action: RelabelAction,
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `s` is a label name with `$1` / `${name}` references in it (Prometheus' check of a
/// templated `target_label` and of `labelmap`'s `replacement`).
fn valid_label_template(s: &str) -> bool {
    // ^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$
    static TEMPLATE: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").ok())
        .as_ref()
        .is_some_and(|r| r.is_match(s))
}

impl RelabelConfig {
    /// Validates the step as Prometheus does and compiles its regex.
    ///
    /// # Errors
    /// The field at fault and why.
    pub fn compile(&self) -> Result<Relabel, RelabelError> {
        let action = self.action;
        let err = |field: &'static str, message: String| Err(RelabelError { field, message });
        let separator = self.separator.clone().unwrap_or_else(|| DEFAULT_SEPARATOR.into());
        let regex_src = self.regex.clone().unwrap_or_else(|| DEFAULT_REGEX.into());
        let replacement = self.replacement.clone().unwrap_or_else(|| DEFAULT_REPLACEMENT.into());
        let target_label = self.target_label.clone().unwrap_or_default();
        let modulus = self.modulus.unwrap_or(0);
        let regex = match Regex::new(&format!("^(?s:{regex_src})$")) {
            Ok(r) => r,
            Err(e) => return err("regex", format!("`{regex_src}` is not a valid regular expression: {e}")),
        };
        use RelabelAction as A;
        if action == A::HashMod && modulus == 0 {
            return err("modulus", "hashmod needs a modulus of at least 1".into());
        }
        let needs_target = matches!(
            action,
            A::Replace | A::HashMod | A::Lowercase | A::Uppercase | A::KeepEqual | A::DropEqual
        );
        if needs_target && target_label.is_empty() {
            return err(
                "target_label",
                format!("the {} action needs a target_label", action.name()),
            );
        }
        let templated = target_label.contains('$');
        if action == A::Replace
            && ((!templated && !valid_label_name(&target_label)) || (templated && !valid_label_template(&target_label)))
        {
            return err(
                "target_label",
                format!("`{target_label}` is not a valid label name for the replace action"),
            );
        }
        if matches!(
            action,
            A::Lowercase | A::Uppercase | A::KeepEqual | A::DropEqual | A::HashMod
        ) && !valid_label_name(&target_label)
        {
            return err(
                "target_label",
                format!(
                    "`{target_label}` is not a valid label name for the {} action",
                    action.name()
                ),
            );
        }
        if matches!(action, A::Lowercase | A::Uppercase | A::KeepEqual | A::DropEqual)
            && replacement != DEFAULT_REPLACEMENT
        {
            return err(
                "replacement",
                format!("the {} action takes no replacement", action.name()),
            );
        }
        if action == A::LabelMap && !valid_label_template(&replacement) {
            return err(
                "replacement",
                format!("`{replacement}` is not a valid label name template for the labelmap action"),
            );
        }
        if matches!(action, A::KeepEqual | A::DropEqual)
            && (regex_src != DEFAULT_REGEX || modulus != 0 || separator != DEFAULT_SEPARATOR)
        {
            return err(
                "action",
                format!("the {} action takes only source_labels and target_label", action.name()),
            );
        }
        if matches!(action, A::LabelDrop | A::LabelKeep)
            && (self.source_labels.is_some()
                || !target_label.is_empty()
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return err("action", format!("the {} action takes only a regex", action.name()));
        }
        if let Some(bad) = self.source_labels.iter().flatten().find(|l| !valid_label_name(l)) {
            return err("source_labels", format!("`{bad}` is not a valid label name"));
        }
        Ok(Relabel {
            source_labels: self.source_labels.clone().unwrap_or_default(),
            separator,
            default_regex: regex_src == DEFAULT_REGEX,
            matcher: Matcher::of(&regex_src),
            regex,
            modulus,
            target_label,
            replacement,
            action,
        })
    }
}

impl Relabel {
    /// Whether the step only keeps or drops series, never changing a label.
    pub fn filters_only(&self) -> bool {
        matches!(
            self.action,
            RelabelAction::Keep | RelabelAction::Drop | RelabelAction::KeepEqual | RelabelAction::DropEqual
        )
    }

    /// Whether the (anchored) regex matches all of `value`.
    fn is_match(&self, value: &str) -> bool {
        match &self.matcher {
            Matcher::Any => true,
            Matcher::Exact(l) => value == l,
            Matcher::Prefix(l) => value.starts_with(l.as_str()),
            Matcher::Contains(l) => value.contains(l.as_str()),
            Matcher::Regex => self.regex.is_match(value),
        }
    }
}

/// What relabeling made of a label set.
#[derive(Debug, Clone, PartialEq)]
pub enum Relabeled {
    /// The same labels: send the series as it is.
    Unchanged,
    /// Not to be sent (a `keep` or `drop`, or no label left).
    Dropped,
    /// New labels, sorted by name, none empty.
    Changed(Vec<Label>),
}

/// The labels being rewritten: the original until the first change, then an owned copy kept
/// sorted by name.
struct Builder<'a> {
    base: &'a [Label],
    owned: Option<Vec<Label>>,
}

impl Builder<'_> {
    fn labels(&self) -> &[Label] {
        self.owned.as_deref().unwrap_or(self.base)
    }

    fn get(&self, name: &str) -> &str {
        // A scan comparing lengths first (they sit in the fat pointers, no string is read) beats
        // a binary search of string comparisons on sets of a dozen labels; `__name__` is
        // usually first.
        self.labels()
            .iter()
            .find(|(k, _)| k.len() == name.len() && **k == *name)
            .map_or("", |(_, v)| &**v)
    }

    fn owned(&mut self) -> &mut Vec<Label> {
        let base = self.base;
        self.owned.get_or_insert_with(|| base.to_vec())
    }

    /// Sets `name` to `value`; an empty value removes the label.
    fn set(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            self.del(name);
            return;
        }
        if self.get(name) == value {
            return;
        }
        let ls = self.owned();
        match ls.binary_search_by(|(k, _)| (**k).cmp(name)) {
            Ok(i) => ls[i].1 = Arc::from(value),
            Err(i) => ls.insert(i, (Arc::from(name), Arc::from(value))),
        }
    }

    fn del(&mut self, name: &str) {
        // The owned copy, once made, holds the same labels: the index found is valid in it.
        if let Ok(i) = self.labels().binary_search_by(|(k, _)| (**k).cmp(name)) {
            self.owned().remove(i);
        }
    }
}

/// The expansion of `template` with the groups of `regex`'s match of `value` (`$1`, `${1}`,
/// `$name`, `$$`), or `None` when it does not match.
fn expand(regex: &Regex, value: &str, template: &str) -> Option<String> {
    let caps = regex.captures(value)?;
    let mut out = String::new();
    caps.expand(template, &mut out);
    Some(out)
}

/// Applies `steps` in order to a sorted label set.
pub fn relabel(steps: &[Relabel], labels: &[Label]) -> Relabeled {
    let mut b = Builder {
        base: labels,
        owned: None,
    };
    let mut value = String::new();
    for s in steps {
        value.clear();
        for (i, name) in s.source_labels.iter().enumerate() {
            if i > 0 {
                value.push_str(&s.separator);
            }
            value.push_str(b.get(name));
        }
        match s.action {
            RelabelAction::Drop => {
                if s.is_match(&value) {
                    return Relabeled::Dropped;
                }
            }
            RelabelAction::Keep => {
                if !s.is_match(&value) {
                    return Relabeled::Dropped;
                }
            }
            RelabelAction::DropEqual => {
                if b.get(&s.target_label) == value {
                    return Relabeled::Dropped;
                }
            }
            RelabelAction::KeepEqual => {
                if b.get(&s.target_label) != value {
                    return Relabeled::Dropped;
                }
            }
            RelabelAction::Replace => {
                if value.is_empty() && s.default_regex && !s.target_label.contains('$') && !s.replacement.contains('$')
                {
                    b.set(&s.target_label, &s.replacement);
                    continue;
                }
                let Some(target) = expand(&s.regex, &value, &s.target_label) else {
                    continue;
                };
                if !valid_label_name(&target) {
                    continue;
                }
                let res = expand(&s.regex, &value, &s.replacement).unwrap_or_default();
                b.set(&target, &res);
            }
            RelabelAction::Lowercase => b.set(&s.target_label, &value.to_lowercase()),
            RelabelAction::Uppercase => b.set(&s.target_label, &value.to_uppercase()),
            RelabelAction::HashMod => {
                let digest = Md5::digest(value.as_bytes());
                let mut tail = [0u8; 8];
                tail.copy_from_slice(&digest[8..16]);
                let m = u64::from_be_bytes(tail) % s.modulus;
                b.set(&s.target_label, &m.to_string());
            }
            RelabelAction::LabelMap => {
                let current: Vec<Label> = b.labels().to_vec();
                for (name, v) in &current {
                    if s.is_match(name) {
                        let new = s.regex.replace_all(name, s.replacement.as_str());
                        b.set(&new, v);
                    }
                }
            }
            RelabelAction::LabelDrop | RelabelAction::LabelKeep => {
                let keep_matching = s.action == RelabelAction::LabelKeep;
                let names: Vec<Arc<str>> = b
                    .labels()
                    .iter()
                    .filter(|(n, _)| s.is_match(n) != keep_matching)
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in names {
                    b.del(&n);
                }
            }
        }
    }
    match b.owned {
        None => Relabeled::Unchanged,
        Some(ls) if ls.is_empty() => Relabeled::Dropped,
        Some(ls) if ls.as_slice() == labels => Relabeled::Unchanged,
        Some(ls) => Relabeled::Changed(ls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwcp_operators::prom::labels_of;

    fn step(yaml: &str) -> Relabel {
        let c: RelabelConfig = serde_yaml::from_str(yaml).expect("yaml");
        c.compile().expect("valid")
    }

    fn run(input: &[(&str, &str)], steps: &[&str]) -> Option<Vec<(String, String)>> {
        let steps: Vec<Relabel> = steps.iter().map(|s| step(s)).collect();
        let labels = labels_of(input.iter().copied());
        let out = match relabel(&steps, &labels) {
            Relabeled::Dropped => return None,
            Relabeled::Unchanged => labels,
            Relabeled::Changed(ls) => {
                assert!(ls.windows(2).all(|w| w[0].0 < w[1].0), "sorted: {ls:?}");
                assert!(ls.iter().all(|(k, v)| !k.is_empty() && !v.is_empty()), "{ls:?}");
                ls
            }
        };
        Some(out.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn owned(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        let mut v: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        v.sort();
        Some(v)
    }

    /// Cases of Prometheus' `model/relabel/relabel_test.go`, with the outputs it expects (the
    /// hashmod value is MD5's last 8 bytes modulo 1000, computed independently with Python's
    /// hashlib: 976 for `baz`).
    #[test]
    fn prometheus_relabel_cases() {
        let abc = [("a", "foo"), ("b", "bar"), ("c", "baz")];
        assert_eq!(
            run(
                &abc,
                &["{source_labels: [a], regex: 'f(.*)', target_label: d, replacement: 'ch${1}-ch${1}'}"]
            ),
            owned(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")])
        );
        assert_eq!(
            run(
                &abc,
                &[
                    "{source_labels: [a, b], regex: 'f(.*);(.*)r', target_label: a, replacement: 'b${1}${2}m'}",
                    "{source_labels: [c, a], regex: '(b).*b(.*)ba(.*)', target_label: d, replacement: '$1$2$2$3'}",
                ]
            ),
            owned(&[("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")])
        );
        assert_eq!(run(&abc, &["{source_labels: [a], regex: '.*o.*', action: drop}"]), None);
        assert_eq!(
            run(&abc, &["{source_labels: [a], regex: '.*o.*', action: keep}"]),
            owned(&abc)
        );
        // Anchored: `o` alone does not match `foo`.
        assert_eq!(run(&abc, &["{source_labels: [a], regex: 'o', action: keep}"]), None);
        assert_eq!(
            run(&abc, &["{source_labels: [a], regex: 'o', action: drop}"]),
            owned(&abc)
        );
        assert_eq!(
            run(
                &[("a", "abc")],
                &["{source_labels: [a], regex: '.*(b).*', target_label: d, replacement: '$1'}"]
            ),
            owned(&[("a", "abc"), ("d", "b")])
        );
        // No match: unchanged.
        assert_eq!(
            run(
                &[("a", "foo")],
                &["{source_labels: [a], regex: 'no-match', target_label: d}"]
            ),
            owned(&[("a", "foo")])
        );
        assert_eq!(
            run(
                &abc,
                &["{source_labels: [c], target_label: d, modulus: 1000, action: hashmod}"]
            ),
            owned(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")])
        );
        assert_eq!(
            run(
                &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
                &["{regex: '(b.*)', replacement: 'bar_${1}', action: labelmap}"]
            ),
            owned(&[
                ("a", "foo"),
                ("b1", "bar"),
                ("b2", "baz"),
                ("bar_b1", "bar"),
                ("bar_b2", "baz")
            ])
        );
        assert_eq!(
            run(
                &[
                    ("__meta_my_bar", "aaa"),
                    ("__meta_my_baz", "bbb"),
                    ("__meta_other", "ccc")
                ],
                &["{regex: '__meta_(my.*)', replacement: '${1}', action: labelmap}"]
            ),
            owned(&[
                ("__meta_my_bar", "aaa"),
                ("__meta_my_baz", "bbb"),
                ("__meta_other", "ccc"),
                ("my_bar", "aaa"),
                ("my_baz", "bbb")
            ])
        );
        let ab = [("a", "foo"), ("b1", "bar"), ("b2", "baz")];
        assert_eq!(
            run(&ab, &["{regex: '(b.*)', action: labeldrop}"]),
            owned(&[("a", "foo")])
        );
        assert_eq!(
            run(&ab, &["{regex: '(b.*)', action: labelkeep}"]),
            owned(&[("b1", "bar"), ("b2", "baz")])
        );
        // A templated target: `${2}` as the value, `${1}` as the name; a missing group makes an
        // empty, invalid name, which leaves the labels as they were. (A template that can never
        // make a valid name, `0${3}`, is a configuration error.)
        let named = [("a", "some-name-value")];
        let templ = |target: &str| {
            format!("{{source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${{2}}', target_label: '{target}'}}")
        };
        assert_eq!(
            run(&named, &[&templ("${1}")]),
            owned(&[("a", "some-name-value"), ("name", "value")])
        );
        assert_eq!(run(&named, &[&templ("${3}")]), owned(&named));
        assert_eq!(
            run(
                &[("foo", "bAr123Foo")],
                &[
                    "{source_labels: [foo], target_label: foo_lowercase, action: lowercase}",
                    "{source_labels: [foo], target_label: foo_uppercase, action: uppercase}",
                ]
            ),
            owned(&[
                ("foo", "bAr123Foo"),
                ("foo_lowercase", "bar123foo"),
                ("foo_uppercase", "BAR123FOO")
            ])
        );
        let ports = [("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")];
        assert_eq!(
            run(
                &ports,
                &["{source_labels: [__tmp_port], target_label: __port1, action: keepequal}"]
            ),
            owned(&ports)
        );
        assert_eq!(
            run(
                &ports,
                &["{source_labels: [__tmp_port], target_label: __port2, action: keepequal}"]
            ),
            None
        );
        assert_eq!(
            run(
                &ports,
                &["{source_labels: [__tmp_port], target_label: __port1, action: dropequal}"]
            ),
            None
        );
        // An empty result removes the label; no label left drops the series.
        assert_eq!(
            run(
                &[("a", "foo"), ("b", "bar")],
                &["{source_labels: [a], target_label: a, replacement: ''}"]
            ),
            owned(&[("b", "bar")])
        );
        assert_eq!(run(&[("a", "foo")], &["{regex: 'a', action: labeldrop}"]), None);
        // The default regex on a missing source: the replacement is written as it is.
        assert_eq!(
            run(
                &[("a", "foo")],
                &["{source_labels: [missing], target_label: c, replacement: bar}"]
            ),
            owned(&[("a", "foo"), ("c", "bar")])
        );
        // `.` matches a newline.
        assert_eq!(
            run(
                &[("a", "foo\nbar")],
                &["{source_labels: [a], regex: 'foo.bar', action: drop}"]
            ),
            None
        );
    }

    /// The string shortcuts answer as the anchored regex does, newlines included.
    #[test]
    fn literal_matchers_agree_with_the_regex() {
        let values = [
            "",
            "dwcp",
            "dwcp:",
            "dwcp:lat:p95",
            "xdwcp:",
            "lat",
            "a\nb",
            "dwcp:\nx",
            "\ndwcp:",
            "DWCP:x",
        ];
        for src in [
            ".*", "dwcp", "dwcp:.*", ".*lat.*", ".*:.*", "dwcp:.+", "a|b", "a.b", ".*", "(.*)",
        ] {
            let s = step(&format!("{{regex: '{src}', action: keep}}"));
            for v in values {
                assert_eq!(s.is_match(v), s.regex.is_match(v), "{src} on {v:?}");
            }
        }
        assert!(matches!(
            step("{regex: 'dwcp:.*', action: keep}").matcher,
            Matcher::Prefix(_)
        ));
        assert!(matches!(
            step("{regex: '.*lat.*', action: keep}").matcher,
            Matcher::Contains(_)
        ));
        assert!(matches!(step("{regex: 'up', action: keep}").matcher, Matcher::Exact(_)));
        assert!(matches!(step("{regex: 'a|b', action: keep}").matcher, Matcher::Regex));
    }

    #[test]
    fn invalid_steps_name_their_field() {
        let err = |yaml: &str| {
            let c: RelabelConfig = serde_yaml::from_str(yaml).expect("yaml");
            let e = c.compile().expect_err("invalid");
            (e.field, e.message)
        };
        assert_eq!(err("{regex: '(', action: keep}").0, "regex");
        assert_eq!(
            err("{source_labels: [a], action: hashmod, target_label: x}"),
            ("modulus", "hashmod needs a modulus of at least 1".into())
        );
        assert_eq!(
            err("{source_labels: [a]}"),
            ("target_label", "the replace action needs a target_label".into())
        );
        assert_eq!(err("{source_labels: [a], target_label: '1x'}").0, "target_label");
        assert_eq!(err("{source_labels: [a], target_label: '0${3}'}").0, "target_label");
        assert_eq!(
            err("{source_labels: [a], target_label: x, action: lowercase, replacement: y}").0,
            "replacement"
        );
        assert_eq!(
            err("{source_labels: [a], regex: 'b', action: labeldrop}"),
            ("action", "the labeldrop action takes only a regex".into())
        );
        assert_eq!(
            err("{source_labels: [a], target_label: b, regex: 'x', action: keepequal}"),
            (
                "action",
                "the keepequal action takes only source_labels and target_label".into()
            )
        );
        assert_eq!(err("{source_labels: ['a-b'], action: keep}").0, "source_labels");
        assert!(serde_yaml::from_str::<RelabelConfig>("{action: explode}").is_err());
    }
}
