//! The printed tables of `ferrovirt-bench scale`: any number of columns, the first left-aligned
//! and the others right-aligned, with section titles on lines of their own; and the p50 / p90 /
//! p99 / max spread of latencies (nearest rank, [`crate::stats::percentile`]).

use crate::report::ms;
use crate::stats::percentile;

/// p50, p90, p99 and max of some samples (milliseconds, signed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Spread {
            count: sorted.len(),
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
        })
    }

    /// `[n, p50, p90, p99, max]` as cells, `n` as `got/expected` when some are missing.
    pub fn cells(spread: Option<Spread>, expected: usize) -> Vec<String> {
        let got = spread.map_or(0, |s| s.count);
        let n = if got == expected {
            got.to_string()
        } else {
            format!("{got}/{expected}")
        };
        let fig = |f: fn(&Spread) -> f64| spread.as_ref().map_or_else(|| "-".to_owned(), |s| ms(f(s)));
        vec![n, fig(|s| s.p50), fig(|s| s.p90), fig(|s| s.p99), fig(|s| s.max)]
    }
}

/// One line of a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A section title, on a line of its own filled with `-`.
    Section(String),
    /// A row of cells; the first is the label.
    Row(Vec<String>),
}

/// A row from a label and the other cells.
pub fn row(label: impl Into<String>, cells: impl IntoIterator<Item = String>) -> Line {
    let mut all = vec![label.into()];
    all.extend(cells);
    Line::Row(all)
}

/// The table as aligned text. Rows shorter than the header are padded with empty cells.
pub fn render(header: &[&str], lines: &[Line]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for line in lines {
        if let Line::Row(cells) = line {
            for (w, c) in widths.iter_mut().zip(cells) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let render_cells = |cells: &[String]| -> String {
        let parts: Vec<String> = (0..columns)
            .map(|i| {
                let c = cells.get(i).map_or("", String::as_str);
                let w = widths[i];
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        parts.join(" | ").trim_end().to_owned()
    };
    let total_width = widths.iter().sum::<usize>() + 3 * (columns.saturating_sub(1));
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut out = vec![
        render_cells(&header),
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-|-"),
    ];
    for line in lines {
        match line {
            Line::Section(title) => out.push(format!("{:-<total_width$}", format!("{title} "))),
            Line::Row(cells) => out.push(render_cells(cells)),
        }
    }
    out.join("\n") + "\n"
}

/// Mebibytes from KiB, one decimal.
pub fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_uses_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Spread::of(&samples).unwrap();
        assert_eq!((s.count, s.p50, s.p90, s.p99, s.max), (100, 50.0, 90.0, 99.0, 100.0));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::cells(Spread::of(&[2.0]), 3), ["1/3", "2.00", "2.00", "2.00", "2.00"]);
        assert_eq!(Spread::cells(None, 3), ["0/3", "-", "-", "-", "-"]);
    }

    #[test]
    fn rows_line_up_and_short_rows_are_padded() {
        let lines = vec![
            Line::Section("latency (ms)".into()),
            row("create -> Running", ["1000".to_owned(), "12.5".to_owned()]),
            row("short", ["1".to_owned()]),
        ];
        let text = render(&["", "n", "p50"], &lines);
        let l: Vec<&str> = text.lines().collect();
        assert_eq!(l.len(), 5, "{text}");
        assert!(l[2].starts_with("latency (ms) ---"), "{text}");
        assert_eq!(l[2].len(), l[1].len(), "{text}");
        let bars = |s: &str| s.match_indices('|').map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(bars(l[0]), bars(l[3]));
        assert_eq!(bars(l[3]), bars(l[4]), "{text}");
    }
}
