//! The printed table of `ferrovirt-bench vms`: sections of rows, each row a count and a spread
//! (p50 / p95 / max, nearest rank, from [`crate::stats::percentile`]), and for memory a total.

use crate::report::ms;
use crate::stats::percentile;

/// p50, p95 and max of some samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
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
            p95: percentile(&sorted, 95.0),
            max: sorted[sorted.len() - 1],
        })
    }

    /// Each figure of `self` minus the same figure of `other` (a difference of percentiles, not
    /// the percentile of differences: the two sets are different runs).
    pub fn minus(&self, other: &Spread) -> Spread {
        Spread {
            count: self.count.min(other.count),
            p50: self.p50 - other.p50,
            p95: self.p95 - other.p95,
            max: self.max - other.max,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A section title; its unit goes in the title.
    Section(String),
    /// A measured row.
    Row(Row),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    /// Samples measured, out of how many were expected.
    pub got: usize,
    pub expected: usize,
    pub spread: Option<Spread>,
    pub total: Option<f64>,
}

impl Row {
    pub fn new(label: impl Into<String>, expected: usize, samples: &[f64]) -> Row {
        Row {
            label: label.into(),
            got: samples.len(),
            expected,
            spread: Spread::of(samples),
            total: None,
        }
    }

    /// A row of a spread computed elsewhere (differences).
    pub fn derived(label: impl Into<String>, spread: Option<Spread>) -> Row {
        Row {
            label: label.into(),
            got: spread.map_or(0, |s| s.count),
            expected: spread.map_or(0, |s| s.count),
            spread,
            total: None,
        }
    }

    /// The same row with the samples' sum as its total.
    pub fn with_total(mut self, samples: &[f64]) -> Row {
        self.total = (!samples.is_empty()).then(|| samples.iter().sum());
        self
    }
}

const HEADERS: [&str; 6] = ["", "n", "p50", "p95", "max", "total"];

fn cells(row: &Row) -> [String; 6] {
    let dash = || "-".to_owned();
    let n = if row.expected == 0 {
        dash()
    } else if row.got == row.expected {
        row.got.to_string()
    } else {
        format!("{}/{}", row.got, row.expected)
    };
    let fig = |f: fn(&Spread) -> f64| row.spread.as_ref().map_or_else(dash, |s| ms(f(s)));
    [
        format!("  {}", row.label),
        n,
        fig(|s| s.p50),
        fig(|s| s.p95),
        fig(|s| s.max),
        row.total.map_or_else(dash, ms),
    ]
}

/// The lines as aligned text: labels left, figures right, section titles on lines of their own
/// (filled with `-` to the table's width; a longer title runs past it).
pub fn render(lines: &[Line]) -> String {
    let rows: Vec<Option<[String; 6]>> = lines
        .iter()
        .map(|l| match l {
            Line::Section(_) => None,
            Line::Row(r) => Some(cells(r)),
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for r in rows.iter().flatten() {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let render_cells = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        parts.join(" | ").trim_end().to_owned()
    };
    let total_width = widths.iter().sum::<usize>() + 3 * (widths.len() - 1);
    let mut out = vec![
        render_cells(&HEADERS.map(str::to_owned)),
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-|-"),
    ];
    for (line, cells) in lines.iter().zip(&rows) {
        match (line, cells) {
            (Line::Section(title), _) => {
                out.push(format!("{:-<total_width$}", format!("{title} ")))
            }
            (_, Some(c)) => out.push(render_cells(c)),
            _ => {}
        }
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_uses_nearest_rank() {
        let samples: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = Spread::of(&samples).unwrap();
        assert_eq!((s.count, s.p50, s.p95, s.max), (20, 10.0, 19.0, 20.0));
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.p50, s.p95, s.max), (2.0, 3.0, 3.0));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn differences_are_figure_by_figure() {
        let a = Spread {
            count: 5,
            p50: 10.0,
            p95: 20.0,
            max: 30.0,
        };
        let b = Spread {
            count: 3,
            p50: 4.0,
            p95: 25.0,
            max: 5.0,
        };
        assert_eq!(
            a.minus(&b),
            Spread {
                count: 3,
                p50: 6.0,
                p95: -5.0,
                max: 25.0
            }
        );
    }

    #[test]
    fn rows_line_up_and_show_missing_samples() {
        let lines = vec![
            Line::Section("from create (ms)".into()),
            Line::Row(Row::new("VMI Running", 5, &[1000.0, 2000.0, 3000.0])),
            Line::Row(Row::new("never", 5, &[])),
            Line::Section("memory RSS (MiB)".into()),
            Line::Row(Row::new("QEMU", 2, &[100.0, 51.0]).with_total(&[100.0, 51.0])),
        ];
        let text = render(&lines);
        let l: Vec<&str> = text.lines().collect();
        assert_eq!(l.len(), 7, "{text}");
        assert!(l[2].starts_with("from create (ms) ---"), "{text}");
        let cells = |line: &str| {
            line.split('|')
                .skip(1)
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(cells(l[3]), ["3/5", "2000", "3000", "3000", "-"], "{text}");
        assert_eq!(cells(l[4]), ["0/5", "-", "-", "-", "-"], "{text}");
        assert_eq!(cells(l[6]), ["2", "51.0", "100", "100", "151"], "{text}");
        let bars = |s: &str| s.match_indices('|').map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(bars(l[0]), bars(l[3]));
        assert_eq!(bars(l[3]), bars(l[6]));
        assert_eq!(l[2].len(), l[1].len(), "{text}");
    }
}
