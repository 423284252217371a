//! The printed table: one row per system measured, `-` where a figure does not apply.

use crate::stats::Summary;

/// One measured system (an API server on a store, or a store reached directly).
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub name: String,
    pub creates_per_sec: Option<f64>,
    pub create: Option<Summary>,
    pub list_full: Option<Summary>,
    pub list_paged: Option<Summary>,
    pub fanout: Option<Summary>,
    /// (events received, events expected) over all (update, watcher) pairs.
    pub delivered: Option<(usize, usize)>,
}

const HEADERS: [&str; 7] = [
    "",
    "creates/s",
    "create p50/p99 ms",
    "list all p50/p99 ms",
    "list paged p50/p99 ms",
    "watch fan-out p50/p99/max ms",
    "events delivered",
];

/// A number of milliseconds with about three significant digits.
pub fn ms(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cells(row: &Row) -> [String; 7] {
    let dash = || "-".to_owned();
    let pair =
        |s: &Option<Summary>| s.map_or_else(dash, |s| format!("{} / {}", ms(s.p50), ms(s.p99)));
    [
        row.name.clone(),
        row.creates_per_sec.map_or_else(dash, |r| format!("{r:.0}")),
        pair(&row.create),
        pair(&row.list_full),
        pair(&row.list_paged),
        row.fanout.map_or_else(dash, |s| {
            format!("{} / {} / {}", ms(s.p50), ms(s.p99), ms(s.max))
        }),
        row.delivered
            .map_or_else(dash, |(got, want)| format!("{got}/{want}")),
    ]
}

/// The rows as an aligned text table: names left-aligned, figures right-aligned.
pub fn table(rows: &[Row]) -> String {
    let body: Vec<[String; 7]> = rows.iter().map(cells).collect();
    let mut widths = HEADERS.map(str::len);
    for line in &body {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |line: &[String]| -> String {
        let parts: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        parts.join(" | ").trim_end().to_owned()
    };
    let header: Vec<String> = HEADERS.iter().map(|h| (*h).to_owned()).collect();
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let mut out = vec![render(&header), rule.join("-|-")];
    out.extend(body.iter().map(|line| render(line)));
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_line_up_and_missing_figures_are_dashes() {
        let s = Summary {
            count: 3,
            p50: 1.234,
            p99: 12.5,
            max: 150.0,
        };
        let rows = [
            Row {
                name: "embedded".into(),
                creates_per_sec: Some(1234.4),
                create: Some(s),
                list_full: Some(s),
                list_paged: Some(s),
                fanout: Some(s),
                delivered: Some((5000, 5000)),
            },
            Row {
                name: "raw etcd put".into(),
                creates_per_sec: Some(9000.0),
                create: Some(s),
                ..Row::default()
            },
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[2].contains("1234 |")
                && lines[2].contains("1.23 / 12.5 / 150")
                && lines[2].contains("5000/5000"),
            "{text}"
        );
        assert_eq!(
            lines[3].rsplit('|').next().map(str::trim),
            Some("-"),
            "{text}"
        );
        // Every column separator sits at the same offset on every line.
        let bars = |l: &str| l.match_indices('|').map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(bars(lines[0]), bars(lines[2]));
        assert_eq!(bars(lines[2]), bars(lines[3]));
    }
}
