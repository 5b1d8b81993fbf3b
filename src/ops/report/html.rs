//! The report page's HTML: escaping, tables, figures and the page shell.
//!
//! Every string that reaches the page goes through [`esc`]: stage names,
//! subject ids, TSV cells and params all come from users' files. Escaping
//! five characters is all HTML text and double-quoted attributes need, so
//! no templating crate is pulled in for it.

use std::fmt::Write as _;

/// `s` safe inside HTML text and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number as the tables print it: 3 decimals, `–` when missing or not finite.
pub fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "–".to_string(),
    }
}

/// The page body under construction, counting what it shows.
#[derive(Default)]
pub struct Page {
    body: String,
    pub images: Vec<String>,
    pub tables: usize,
    pub sections: Vec<String>,
}

impl Page {
    /// Starts a section (`id` names it in the op's metrics).
    pub fn section(&mut self, id: &str, heading: &str) {
        self.sections.push(id.to_string());
        let _ = writeln!(
            self.body,
            "<section id=\"{}\">\n<h2>{}</h2>",
            esc(id),
            esc(heading)
        );
    }

    pub fn end_section(&mut self) {
        self.body.push_str("</section>\n");
    }

    pub fn heading(&mut self, text: &str) {
        let _ = writeln!(self.body, "<h3>{}</h3>", esc(text));
    }

    pub fn para(&mut self, text: &str) {
        let _ = writeln!(self.body, "<p>{}</p>", esc(text));
    }

    /// An image beside the page, by its file name in the artifact folder.
    pub fn figure(&mut self, file: &str, caption: &str) {
        self.images.push(file.to_string());
        let _ = writeln!(
            self.body,
            "<figure><img src=\"{0}\" alt=\"{1}\"><figcaption>{1}</figcaption></figure>",
            esc(file),
            esc(caption)
        );
    }

    /// A plain table; rows shorter than the header are padded with blanks.
    pub fn table(&mut self, header: &[String], rows: &[Vec<String>]) {
        self.tables += 1;
        let mut html = String::from("<table>\n<thead><tr>");
        for h in header {
            let _ = write!(html, "<th>{}</th>", esc(h));
        }
        html.push_str("</tr></thead>\n<tbody>\n");
        for row in rows {
            html.push_str("<tr>");
            for i in 0..header.len().max(row.len()) {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                let _ = write!(html, "<td>{}</td>", esc(cell));
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</tbody>\n</table>\n");
        self.body.push_str(&html);
    }

    /// A table whose columns are grouped under spanning headings:
    /// `groups` holds (heading, sub-column names); rows hold the row label
    /// then every sub-column's cell, group after group.
    pub fn grouped_table(
        &mut self,
        corner: &str,
        groups: &[(String, Vec<String>)],
        rows: &[Vec<String>],
    ) {
        self.tables += 1;
        let mut html = format!("<table>\n<thead><tr><th rowspan=\"2\">{}</th>", esc(corner));
        for (g, cols) in groups {
            let _ = write!(
                html,
                "<th colspan=\"{}\" class=\"group\">{}</th>",
                cols.len().max(1),
                esc(g)
            );
        }
        html.push_str("</tr>\n<tr>");
        for (_, cols) in groups {
            for c in cols {
                let _ = write!(html, "<th>{}</th>", esc(c));
            }
        }
        html.push_str("</tr></thead>\n<tbody>\n");
        let width = 1 + groups.iter().map(|(_, c)| c.len().max(1)).sum::<usize>();
        for row in rows {
            html.push_str("<tr>");
            for i in 0..width {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                let tag = if i == 0 { "th" } else { "td" };
                let _ = write!(html, "<{tag}>{}</{tag}>", esc(cell));
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</tbody>\n</table>\n");
        self.body.push_str(&html);
    }

    /// The whole document: no scripts, no external resources.
    pub fn finish(self, title: &str) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n{}</body>\n</html>\n",
            esc(title),
            esc(title),
            self.body
        )
    }
}

const STYLE: &str = "\
body { font-family: 'DejaVu Sans', Helvetica, Arial, sans-serif; margin: 2em auto; padding: 0 1.5em; max-width: 1400px; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
th.group { text-align: center; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
code { background: #f6f6f6; padding: 0 3px; }
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(esc("train[lr=0.001] ≥ 62"), "train[lr=0.001] ≥ 62");
    }

    #[test]
    fn tables_and_figures_escape_and_count() {
        let mut page = Page::default();
        page.section("s", "S <1>");
        page.table(&["a<".into(), "b".into()], &[vec!["<i>".into()]]);
        page.grouped_table(
            "stage",
            &[("all".into(), vec!["n".into(), "BA".into()])],
            &[vec!["x&y".into(), "3".into(), "0.5".into()]],
        );
        page.figure("a\"b.png", "cap <b>");
        page.end_section();
        let html = page.finish("T <t>");
        assert!(html.contains("<th>a&lt;</th><th>b</th>"), "{html}");
        assert!(html.contains("<td>&lt;i&gt;</td><td></td>"), "{html}");
        assert!(
            html.contains("<th colspan=\"2\" class=\"group\">all</th>"),
            "{html}"
        );
        assert!(
            html.contains("<th>x&amp;y</th><td>3</td><td>0.5</td>"),
            "{html}"
        );
        assert!(
            html.contains("src=\"a&quot;b.png\" alt=\"cap &lt;b&gt;\""),
            "{html}"
        );
        assert!(html.contains("<title>T &lt;t&gt;</title>"));
        assert!(!html.contains("<b>") && !html.contains("<i>"));
        assert_eq!(num(Some(0.12345)), "0.123");
        assert_eq!(num(Some(f64::NAN)), "–");
    }
}
