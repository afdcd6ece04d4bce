//! Output: every scenario fills [`Table`]s, printed aligned to stdout and written as CSV (for
//! `bench/plot.py`) and as Markdown (for `bench/RESULTS.md`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One table of results.
pub struct Table {
    /// File stem of the CSV (`fanout` → `fanout.csv`).
    pub name: String,
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(name: &str, title: &str, columns: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            title: title.to_string(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.columns.iter().map(String::len).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        widths
    }

    /// The table as aligned plain text.
    pub fn text(&self) -> String {
        let widths = self.widths();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, width))| {
                    // Names on the left, numbers on the right.
                    if i == 0 {
                        format!("{cell:<width$}")
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = format!("\n== {} ==\n{}\n", self.title, line(&self.columns));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row));
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n| {} |\n", self.title, self.columns.join(" | "));
        let _ = writeln!(out, "|{}", "---:|".repeat(self.columns.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }

    pub fn csv(&self) -> String {
        let escape = |cell: &String| {
            if cell.contains([',', '"', '\n']) {
                format!("\"{}\"", cell.replace('"', "\"\""))
            } else {
                cell.clone()
            }
        };
        let mut out = String::new();
        for row in std::iter::once(&self.columns).chain(&self.rows) {
            let _ = writeln!(
                out,
                "{}",
                row.iter().map(escape).collect::<Vec<_>>().join(",")
            );
        }
        out
    }
}

/// Where tables go: stdout, `<dir>/<name>.csv`, and all of them in `<dir>/summary.md`.
pub struct Reporter {
    dir: PathBuf,
    markdown: String,
}

impl Reporter {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            markdown: String::new(),
        })
    }

    pub fn emit(&mut self, table: &Table) -> anyhow::Result<()> {
        print!("{}", table.text());
        std::io::stdout().flush()?;
        std::fs::write(self.dir.join(format!("{}.csv", table.name)), table.csv())?;
        self.markdown.push_str(&table.markdown());
        self.markdown.push('\n');
        std::fs::write(self.dir.join("summary.md"), &self.markdown)?;
        Ok(())
    }

    /// A note under the tables of `summary.md` (and on stdout).
    pub fn note(&mut self, text: &str) -> anyhow::Result<()> {
        println!("{text}");
        self.markdown.push_str(text);
        self.markdown.push_str("\n\n");
        std::fs::write(self.dir.join("summary.md"), &self.markdown)?;
        Ok(())
    }
}

/// Formats a number with `decimals` decimals.
pub fn num(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}")
}

/// `ours / peer` as a ratio string, or `-` when undefined.
pub fn ratio(ours: f64, peer: f64) -> String {
    if peer > 0.0 && ours.is_finite() {
        format!("{:.2}", ours / peer)
    } else {
        "-".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_renders_as_text_csv_and_markdown() {
        let mut table = Table::new("t", "Title", &["target", "value"]);
        table.push(vec!["ours".into(), "1.5".into()]);
        table.push(vec!["peer, node".into(), "12".into()]);
        assert!(
            table.text().contains("\nours          1.5\n"),
            "{}",
            table.text()
        );
        assert_eq!(table.csv(), "target,value\nours,1.5\n\"peer, node\",12\n");
        assert!(table.markdown().contains("| ours | 1.5 |"));
        assert_eq!(ratio(3.0, 2.0), "1.50");
        assert_eq!(ratio(3.0, 0.0), "-");
    }
}
