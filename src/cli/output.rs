//! Owns how the query commands print: the `-o table|json|yaml|jsonl` formats, tables whose
//! columns fit the terminal, colour (only on a terminal, never with NO_COLOR), and the parsing of
//! `--since/--until/--at` times (durations ago or RFC 3339).

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::io::{IsTerminal, Write};

/// Output formats of the query commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One pretty-printed JSON document.
    Json,
    /// One YAML document.
    Yaml,
    /// JSON Lines: one compact JSON object per line (per event, revision, App...).
    Jsonl,
}

/// A point in time on the command line: a duration meaning "that long ago" (`90s`, `15m`,
/// `2h`, `7d`, `1w`, `1h30m`) or an RFC 3339 timestamp (`2026-11-27T09:00:00Z`).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    parse_time_at(text, Utc::now())
}

/// [`parse_time`] with an explicit "now" (pure, for tests).
pub fn parse_time_at(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(text).map_err(|e| {
        format!(
            "{text:?} is neither a duration ago (90m, 2h, 7d) nor an RFC 3339 time \
             (2026-11-27T09:00:00Z): {e}"
        )
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| format!("{text:?} is too long ago"))?;
    now.checked_sub_signed(ago)
        .ok_or_else(|| format!("{text:?} is too long ago"))
}

/// A time as tables print it: UTC to the second.
pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Colours the tables use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Red,
    Green,
    Yellow,
    Cyan,
    Dim,
    Bold,
}

/// Whether to colour: only when stdout is a terminal and NO_COLOR is unset or empty.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    pub fn detect() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            colour: !no_color && std::io::stdout().is_terminal(),
        }
    }

    pub fn plain() -> Style {
        Style { colour: false }
    }

    pub fn paint(&self, text: &str, colour: Option<Colour>) -> String {
        match (self.colour, colour) {
            (true, Some(c)) => {
                let code = match c {
                    Colour::Red => "31",
                    Colour::Green => "32",
                    Colour::Yellow => "33",
                    Colour::Cyan => "36",
                    Colour::Dim => "2",
                    Colour::Bold => "1",
                };
                format!("\x1b[{code}m{text}\x1b[0m")
            }
            _ => text.to_string(),
        }
    }
}

/// The terminal's width, when stdout is one (`COLUMNS` wins, as for other tools).
pub fn terminal_width() -> Option<usize> {
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return Some(c);
    }
    if !std::io::stdout().is_terminal() {
        return None;
    }
    console::Term::stdout()
        .size_checked()
        .map(|(_, w)| w as usize)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub colour: Option<Colour>,
}

impl Cell {
    pub fn new(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            colour: None,
        }
    }

    pub fn colour(text: impl Into<String>, colour: Colour) -> Cell {
        Cell {
            text: text.into(),
            colour: Some(colour),
        }
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::new(s)
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::new(s)
    }
}

/// Columns separated by two spaces. When the rows are wider than the terminal, the widest
/// columns are cut (with `…`) until they fit, the last column first: it is the free text.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

const GAP: usize = 2;
const MIN_COLUMN: usize = 8;

fn width_of(s: &str) -> usize {
    console::measure_text_width(s)
}

fn cut(s: &str, width: usize) -> String {
    if width_of(s) <= width {
        return s.to_string();
    }
    let mut out = String::new();
    for ch in s.chars() {
        if width_of(&out) + 2 > width {
            break;
        }
        out.push(ch);
    }
    out.push('…');
    out
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// Column widths fitted into `max` (no limit when `None`).
    pub fn widths(&self, max: Option<usize>) -> Vec<usize> {
        let n = self.headers.len();
        let mut widths: Vec<usize> = (0..n)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| width_of(&c.text))
                    .chain([width_of(&self.headers[i])])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        if let Some(max) = max {
            let total = |w: &[usize]| w.iter().sum::<usize>() + GAP * w.len().saturating_sub(1);
            // Cut the last column first, then the widest, never below MIN_COLUMN.
            while total(&widths) > max {
                let over = total(&widths) - max;
                let last = n - 1;
                let i = if widths[last] > MIN_COLUMN {
                    last
                } else {
                    match (0..n)
                        .filter(|i| widths[*i] > MIN_COLUMN)
                        .max_by_key(|i| widths[*i])
                    {
                        Some(i) => i,
                        None => break,
                    }
                };
                widths[i] = widths[i].saturating_sub(over).max(MIN_COLUMN);
            }
        }
        widths
    }

    pub fn render(&self, style: &Style, max: Option<usize>) -> String {
        let widths = self.widths(max);
        let mut out = String::new();
        let mut line = |cells: Vec<(String, Option<Colour>)>| {
            let last = cells.len().saturating_sub(1);
            let mut l = String::new();
            for (i, (text, colour)) in cells.into_iter().enumerate() {
                let text = cut(&text, widths[i]);
                let pad = widths[i].saturating_sub(width_of(&text));
                l.push_str(&style.paint(&text, colour));
                if i != last {
                    l.push_str(&" ".repeat(pad + GAP));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(
            self.headers
                .iter()
                .map(|h| (h.clone(), Some(Colour::Bold)))
                .collect(),
        );
        for row in &self.rows {
            line(row.iter().map(|c| (c.text.clone(), c.colour)).collect());
        }
        out
    }
}

/// Writes `value` in a machine format (JSON, YAML, or JSON Lines of `items`). Returns `false`
/// for [`Format::Table`]: the caller renders it.
pub fn machine<T: Serialize, I: Serialize>(
    out: &mut dyn Write,
    format: Format,
    value: &T,
    items: &[I],
) -> anyhow::Result<bool> {
    match format {
        Format::Table => return Ok(false),
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(value)?)?,
        Format::Yaml => {
            let text = serde_saphyr::to_string(value).context("writing YAML")?;
            out.write_all(text.as_bytes())?;
            if !text.ends_with('\n') {
                writeln!(out)?;
            }
        }
        Format::Jsonl => {
            for item in items {
                writeln!(out, "{}", serde_json::to_string(item)?)?;
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn times_are_durations_ago_or_rfc3339() {
        let at = |s: &str| parse_time_at(s, now()).map(|t| time(&t));
        assert_eq!(at("90m").unwrap(), "2026-11-27T10:30:00Z");
        assert_eq!(at("2h").unwrap(), "2026-11-27T10:00:00Z");
        assert_eq!(at("7d").unwrap(), "2026-11-20T12:00:00Z");
        assert_eq!(at("1h30m").unwrap(), "2026-11-27T10:30:00Z");
        assert_eq!(
            at("2026-11-01T08:00:00+02:00").unwrap(),
            "2026-11-01T06:00:00Z"
        );
        let e = at("yesterday").unwrap_err();
        assert!(e.contains("\"yesterday\"") && e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn tables_align_and_cut_the_last_column_to_fit() {
        let mut t = Table::new(&["SEQ", "KIND", "SUMMARY"]);
        t.row(vec![
            "1".into(),
            "CommitObserved".into(),
            "a long summary here".into(),
        ]);
        t.row(vec!["12".into(), "Drift".into(), "short".into()]);
        let plain = t.render(&Style::plain(), None);
        assert_eq!(
            plain,
            "SEQ  KIND            SUMMARY\n\
             1    CommitObserved  a long summary here\n\
             12   Drift           short\n"
        );
        let narrow = t.render(&Style::plain(), Some(30));
        for line in narrow.lines() {
            assert!(width_of(line) <= 30, "{line:?}");
        }
        assert!(narrow.contains("a long s…"), "{narrow}");
        // Colour codes do not count towards widths.
        let mut c = Table::new(&["A", "B"]);
        c.row(vec![Cell::colour("red", Colour::Red), "x".into()]);
        let coloured = c.render(&Style { colour: true }, None);
        assert!(coloured.contains("\x1b[31mred\x1b[0m  x"), "{coloured:?}");
    }

    #[test]
    fn machine_formats() {
        #[derive(Serialize)]
        struct R {
            a: u32,
        }
        let items = vec![R { a: 1 }, R { a: 2 }];
        let mut out = Vec::new();
        assert!(machine(&mut out, Format::Jsonl, &items, &items).unwrap());
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        let mut out = Vec::new();
        assert!(machine(&mut out, Format::Yaml, &items, &items).unwrap());
        let y = String::from_utf8(out).unwrap();
        assert!(y.contains("a: 1") && y.contains("a: 2"), "{y}");
        let mut out = Vec::new();
        assert!(!machine(&mut out, Format::Table, &items, &items).unwrap());
        assert!(out.is_empty());
    }
}
