//! Plain-text tables for command output: columns padded to their widest cell
//! (counted in characters, so `→` and `×` line up), numbers aligned right.

/// Lays out `rows` (the first one is the header) indented by two spaces, columns two
/// spaces apart. Column `i` is aligned right when `right[i]` is true. The last column
/// is not padded, so rows carry no trailing spaces.
pub(super) fn render(rows: &[Vec<String>], right: &[bool]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            let width = widths.get(c).copied().unwrap_or(0);
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            let last = c + 1 == row.len();
            if c > 0 {
                line.push_str("  ");
            }
            if right.get(c).copied().unwrap_or(false) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if !last {
                    line.push_str(&pad);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A share (0 to 1) as a percentage with one decimal: `33.3%`.
pub(super) fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A ratio with two decimals, or `-` when there is none.
pub(super) fn ratio(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |r| format!("{r:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let rows = vec![
            vec!["backend".into(), "share".into(), "note".into()],
            vec!["a:1".into(), "5.0%".into(), "".into()],
            vec!["long:1234".into(), "33.3% → 50.0%".into(), "!".into()],
        ];
        assert_eq!(
            render(&rows, &[false, true, false]),
            "  backend            share  note\n  \
             a:1                 5.0%\n  \
             long:1234  33.3% → 50.0%  !\n"
        );
    }
}
