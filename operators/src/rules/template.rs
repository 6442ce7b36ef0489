//! The part of Prometheus's alert templating that rule files use: `{{ $labels.x }}`,
//! `{{ $value }}`, `{{ humanize $value }}` (and `humanize1024`, `humanizePercentage`,
//! `humanizeDuration`), the pipe form `{{ $value | humanize }}`, `{{ printf "%.2f" $value }}`,
//! `{{ $externalLabels.x }}`, and `{{-`/`-}}` trimming. Anything else is an error when the rule
//! file loads, naming the construct.

use std::collections::BTreeMap;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action { arg: Arg, funcs: Vec<Func> },
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Value,
    Label(String),
    External(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Func {
    Humanize,
    Humanize1024,
    HumanizePercentage,
    HumanizeDuration,
    Printf(String),
    ToUpper,
    ToLower,
}

fn parse_arg(s: &str) -> Option<Arg> {
    if s == "$value" || s == ".Value" {
        return Some(Arg::Value);
    }
    if let Some(l) = s.strip_prefix("$labels.").or_else(|| s.strip_prefix(".Labels.")) {
        return Some(Arg::Label(l.to_string()));
    }
    s.strip_prefix("$externalLabels.")
        .or_else(|| s.strip_prefix(".ExternalLabels."))
        .map(|l| Arg::External(l.to_string()))
}

fn parse_func(name: &str) -> Option<Func> {
    Some(match name {
        "humanize" => Func::Humanize,
        "humanize1024" => Func::Humanize1024,
        "humanizePercentage" => Func::HumanizePercentage,
        "humanizeDuration" => Func::HumanizeDuration,
        "toUpper" => Func::ToUpper,
        "toLower" => Func::ToLower,
        _ => return None,
    })
}

/// Splits an action on whitespace, keeping quoted strings whole.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    for c in s.chars() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '`' => {
                cur.push(c);
                quote = Some(c);
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            None => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse_action(action: &str) -> Result<Part, String> {
    let unsupported = || format!("unsupported template construct `{{{{ {action} }}}}`");
    let mut funcs = Vec::new();
    let mut arg = None;
    for (i, stage) in action.split('|').enumerate() {
        let w = words(stage.trim());
        match (i, w.as_slice()) {
            (0, [a]) => arg = Some(parse_arg(a).ok_or_else(unsupported)?),
            (0, [f, a]) => {
                funcs.push(parse_func(f).ok_or_else(unsupported)?);
                arg = Some(parse_arg(a).ok_or_else(unsupported)?);
            }
            (0, [p, fmt, a]) if p == "printf" => {
                let fmt = fmt.trim_matches(|c| c == '"' || c == '`').to_string();
                funcs.push(Func::Printf(fmt));
                arg = Some(parse_arg(a).ok_or_else(unsupported)?);
            }
            (_, [f]) if i > 0 => funcs.push(parse_func(f).ok_or_else(unsupported)?),
            (_, [p, fmt]) if i > 0 && p == "printf" => {
                funcs.push(Func::Printf(fmt.trim_matches(|c| c == '"' || c == '`').to_string()));
            }
            _ => return Err(unsupported()),
        }
    }
    // Functions apply innermost first: `humanize $value` and `$value | humanize` alike.
    Ok(Part::Action {
        arg: arg.ok_or_else(unsupported)?,
        funcs,
    })
}

impl Template {
    /// Parses `text`.
    ///
    /// # Errors
    /// The first construct it does not support, or an unclosed `{{`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let mut before = &rest[..start];
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or("unclosed `{{` in template")?;
            let mut action = &after[..end];
            if let Some(a) = action.strip_prefix('-') {
                before = before.trim_end();
                action = a;
            }
            let mut trim_next = false;
            if let Some(a) = action.strip_suffix('-') {
                action = a;
                trim_next = true;
            }
            if !before.is_empty() {
                parts.push(Part::Text(before.to_string()));
            }
            let action = action.trim();
            // `{{ /* comment */ }}` renders nothing.
            if !(action.starts_with("/*") && action.ends_with("*/")) {
                parts.push(parse_action(action)?);
            }
            rest = &after[end + 2..];
            if trim_next {
                rest = rest.trim_start();
            }
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Renders with an alert's labels and value.
    pub fn render(&self, labels: &BTreeMap<String, String>, value: f64) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action { arg, funcs } => {
                    let mut s = match arg {
                        Arg::Value => None,
                        Arg::Label(l) => Some(labels.get(l).cloned().unwrap_or_default()),
                        Arg::External(_) => Some(String::new()),
                    };
                    for f in funcs {
                        let v = match &s {
                            None => value,
                            Some(text) => text.parse().unwrap_or(f64::NAN),
                        };
                        s = Some(match f {
                            Func::Humanize => humanize(v),
                            Func::Humanize1024 => humanize1024(v),
                            Func::HumanizePercentage => format!("{}%", format_g(v * 100.0, 4)),
                            Func::HumanizeDuration => humanize_duration(v),
                            Func::Printf(fmt) => printf(fmt, s.as_deref(), v),
                            Func::ToUpper => s.as_deref().map_or_else(|| go_float(v), str::to_string).to_uppercase(),
                            Func::ToLower => s.as_deref().map_or_else(|| go_float(v), str::to_string).to_lowercase(),
                        });
                    }
                    out.push_str(&s.unwrap_or_else(|| go_float(value)));
                }
            }
        }
        out
    }
}

/// Go's `%v` of a float64: shortest digits, exponent form below 1e-4 or from 1e6.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    let sci = format!("{v:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{v}")
    } else {
        format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

/// Go's `%.{prec}g`.
pub fn format_g(v: f64, prec: usize) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    let prec = prec.max(1);
    let sci = format!("{:.*e}", prec - 1, v);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
    if exp < -4 || exp >= prec as i32 {
        let mant = if mant.contains('.') {
            mant.trim_end_matches('0').trim_end_matches('.')
        } else {
            mant
        };
        format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        #[allow(clippy::cast_sign_loss)]
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        let f = format!("{v:.decimals$}");
        if f.contains('.') {
            f.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            f
        }
    }
}

/// Prometheus's `humanize`: SI prefixes, 4 significant digits.
pub fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return format_g(v, 4);
    }
    if v.abs() >= 1.0 {
        let mut x = v;
        let mut prefix = "";
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if x.abs() < 1000.0 {
                break;
            }
            prefix = p;
            x /= 1000.0;
        }
        return format!("{}{prefix}", format_g(x, 4));
    }
    let mut x = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if x.abs() >= 1.0 {
            break;
        }
        prefix = p;
        x *= 1000.0;
    }
    format!("{}{prefix}", format_g(x, 4))
}

/// Prometheus's `humanize1024`: binary prefixes.
pub fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return format_g(v, 4);
    }
    let mut x = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if x.abs() < 1024.0 {
            break;
        }
        prefix = p;
        x /= 1024.0;
    }
    format!("{}{prefix}", format_g(x, 4))
}

/// Prometheus's `humanizeDuration` of seconds.
#[allow(clippy::cast_possible_truncation)]
pub fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return format_g(v, 4);
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let total = v.abs();
        let secs = total as i64;
        let (d, h, m, s) = (secs / 86_400, (secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let mut out = String::from(sign);
        if d != 0 {
            out.push_str(&format!("{d}d "));
        }
        if d != 0 || h != 0 {
            out.push_str(&format!("{h}h "));
        }
        if d != 0 || h != 0 || m != 0 {
            out.push_str(&format!("{m}m "));
        }
        out.push_str(&format!("{s}s"));
        return out;
    }
    if v == 0.0 {
        return "0s".into();
    }
    let mut x = v;
    for p in ["ms", "us", "ns", "ps", "fs", "as"] {
        x *= 1000.0;
        if x.abs() >= 1.0 {
            return format!("{}{p}", format_g(x, 4));
        }
    }
    format!("{}as", format_g(x, 4))
}

/// A subset of Go's `printf` with one argument: `%f`, `%.Nf`, `%g`, `%.Ng`, `%d`, `%s`, `%v`,
/// `%e`, `%%`.
fn printf(fmt: &str, text: Option<&str>, v: f64) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&n) = chars.peek() {
            spec.push(n);
            chars.next();
            if n.is_ascii_alphabetic() || n == '%' {
                break;
            }
        }
        let verb = spec.chars().last().unwrap_or('v');
        let prec: Option<usize> = spec
            .split_once('.')
            .and_then(|(_, p)| p.trim_end_matches(verb).parse().ok());
        match verb {
            '%' => out.push('%'),
            'f' => out.push_str(&format!("{v:.*}", prec.unwrap_or(6))),
            'e' => out.push_str(&format!("{v:.*e}", prec.unwrap_or(6))),
            'g' => out.push_str(&prec.map_or_else(|| go_float(v), |p| format_g(v, p))),
            #[allow(clippy::cast_possible_truncation)]
            'd' => out.push_str(&format!("{}", v as i64)),
            _ => out.push_str(&text.map_or_else(|| go_float(v), str::to_string)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> BTreeMap<String, String> {
        [("region".to_string(), "us-east-1".to_string())].into()
    }

    #[test]
    fn renders_labels_values_and_humanized_values() {
        let t = Template::parse(
            "p95 in {{ $labels.region }} is {{ humanize $value }}ms ({{ $value }}), {{ $value | printf \"%.2f\" }}",
        )
        .expect("parse");
        assert_eq!(
            t.render(&labels(), 123_456.789),
            "p95 in us-east-1 is 123.5kms (123456.789), 123456.79"
        );
        assert_eq!(
            Template::parse("{{ humanizePercentage $value }}")
                .expect("t")
                .render(&labels(), 0.1234),
            "12.34%"
        );
        assert_eq!(
            Template::parse("{{ humanizeDuration $value }}")
                .expect("t")
                .render(&labels(), 3723.0),
            "1h 2m 3s"
        );
        assert_eq!(
            Template::parse("{{ humanize $value }}")
                .expect("t")
                .render(&labels(), 0.00123),
            "1.23m"
        );
        assert_eq!(
            Template::parse("a {{- $value -}} b").expect("t").render(&labels(), 1.5),
            "a1.5b"
        );
        assert_eq!(go_float(1_000_000.0), "1e+06");
        assert_eq!(go_float(150.0), "150");
        assert_eq!(go_float(0.00001), "1e-05");
    }

    #[test]
    fn unsupported_constructs_are_errors_naming_them() {
        let e = Template::parse("{{ range $labels }}x{{ end }}").expect_err("range");
        assert!(e.contains("range $labels"), "{e}");
        assert!(Template::parse("{{ query \"up\" }}").is_err());
        assert!(Template::parse("{{ $value ").is_err());
    }
}
