//! Prometheus series selectors (`name{label="v", other=~"re"}`), parsed with the
//! `promql-parser` crate and matched against [`Sample`]s: how configuration names the series an
//! operator reads (SLA counters, health factors, network and capacity inputs).
//!
//! Only a plain instant-vector selector is accepted; anything else (a function, a range, an
//! `offset`, `@`, an `or` of matcher sets) is an error naming what was found, never a silently
//! different selection.

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr};

use crate::prom::Sample;

/// A parsed selector.
#[derive(Debug, Clone)]
pub struct Selector {
    text: String,
    name: Option<String>,
    matchers: Vec<Matcher>,
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Selector {
    /// Parses `text`.
    ///
    /// # Errors
    /// A message naming the problem when `text` is not a plain series selector.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expr = parser::parse(text).map_err(|e| format!("not a valid selector: {e}"))?;
        let Expr::VectorSelector(vs) = expr else {
            return Err(format!(
                "must be a series selector like name{{label=\"value\"}}, found {}",
                kind(&expr)
            ));
        };
        if vs.offset.is_some() || vs.at.is_some() {
            return Err("offset and @ are not supported in a series selector".to_string());
        }
        if !vs.matchers.or_matchers.is_empty() {
            return Err("`or` between matcher sets is not supported in a series selector".to_string());
        }
        // The parser adds the name as a `__name__` matcher; keep it once, as the name.
        let matchers = vs
            .matchers
            .matchers
            .into_iter()
            .filter(|m| {
                !(m.name == "__name__" && matches!(m.op, MatchOp::Equal) && vs.name.as_deref() == Some(&m.value))
            })
            .collect();
        Ok(Selector {
            text: text.to_string(),
            name: vs.name,
            matchers,
        })
    }

    /// The metric name, when the selector has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The first `label="value"` matcher, for indexing (a selector matches only samples that
    /// carry that label with that value, unless the value is empty).
    pub fn first_equality(&self) -> Option<(&str, &str)> {
        self.matchers
            .iter()
            .find(|m| matches!(m.op, MatchOp::Equal) && !m.value.is_empty() && m.name != "__name__")
            .map(|m| (m.name.as_str(), m.value.as_str()))
    }

    /// The text it was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A selector for a sibling series: the same matchers on another metric name (`_bucket`,
    /// `_count` of a histogram named by this selector).
    pub fn with_suffix(&self, suffix: &str) -> Selector {
        Selector {
            text: format!("{}{suffix}", self.text),
            name: self.name.as_ref().map(|n| format!("{n}{suffix}")),
            matchers: self.matchers.clone(),
        }
    }

    /// Whether the sample's series matches: the name, then every matcher (a missing label
    /// matches as the empty string, as in Prometheus).
    pub fn matches(&self, s: &Sample) -> bool {
        if let Some(n) = &self.name {
            if s.name() != n {
                return false;
            }
        }
        self.matchers.iter().all(|m| m.is_match(s.label(&m.name).unwrap_or("")))
    }

    /// Whether a series with these labels (`__name__` among them) matches.
    pub fn matches_labels(&self, labels: &crate::promql::Labels) -> bool {
        let get = |k: &str| labels.get(k).map_or("", String::as_str);
        self.name.as_deref().is_none_or(|n| get("__name__") == n)
            && self.matchers.iter().all(|m| m.is_match(get(&m.name)))
    }
}

fn kind(e: &Expr) -> &'static str {
    match e {
        Expr::Aggregate(_) => "an aggregation",
        Expr::Unary(_) => "a unary expression",
        Expr::Binary(_) => "a binary expression",
        Expr::Paren(_) => "a parenthesized expression",
        Expr::Subquery(_) => "a subquery",
        Expr::NumberLiteral(_) => "a number",
        Expr::StringLiteral(_) => "a string",
        Expr::VectorSelector(_) => "a selector",
        Expr::MatrixSelector(_) => "a range selector",
        Expr::Call(_) => "a function call",
        Expr::Extension(_) => "an extension",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom::labels_of;

    fn sample(pairs: &[(&str, &str)]) -> Sample {
        let mut l = labels_of(pairs.iter().copied());
        l.sort();
        Sample::new(l, 1.0, 0)
    }

    #[test]
    fn the_four_matcher_types_and_a_missing_label() {
        let s = Selector::parse(r#"http_total{code=~"5..", region!="eu", job="api", path!~"/health.*"}"#)
            .expect("selector");
        assert_eq!(s.name(), Some("http_total"));
        let m = |pairs: &[(&str, &str)]| s.matches(&sample(pairs));
        assert!(m(&[
            ("__name__", "http_total"),
            ("code", "503"),
            ("region", "us"),
            ("job", "api"),
            ("path", "/x")
        ]));
        assert!(!m(&[
            ("__name__", "http_total"),
            ("code", "200"),
            ("region", "us"),
            ("job", "api")
        ]));
        assert!(!m(&[
            ("__name__", "http_total"),
            ("code", "500"),
            ("region", "eu"),
            ("job", "api")
        ]));
        assert!(!m(&[
            ("__name__", "http_total"),
            ("code", "500"),
            ("job", "api"),
            ("path", "/healthz")
        ]));
        // Regexes are anchored: "5.." does not match "1500".
        assert!(!m(&[("__name__", "http_total"), ("code", "1500"), ("job", "api")]));
        assert!(!m(&[("__name__", "other"), ("code", "500"), ("job", "api")]));
        let any = Selector::parse(r#"{job="api"}"#).expect("selector");
        assert!(any.matches(&sample(&[("__name__", "x"), ("job", "api")])));
        let suffixed = Selector::parse(r#"lat{job="api"}"#)
            .expect("selector")
            .with_suffix("_bucket");
        assert!(suffixed.matches(&sample(&[("__name__", "lat_bucket"), ("job", "api"), ("le", "1")])));
    }

    #[test]
    fn anything_but_a_plain_selector_is_an_error_naming_it() {
        let e = |t: &str| Selector::parse(t).expect_err(t);
        assert!(e("rate(x[5m])").contains("a function call"), "{}", e("rate(x[5m])"));
        assert!(e("x[5m]").contains("range selector"));
        assert!(e("x offset 5m").contains("offset"));
        assert!(e("sum(x)").contains("aggregation"));
        assert!(e("x{").contains("not a valid selector"));
    }
}
