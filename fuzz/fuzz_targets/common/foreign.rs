//! Properties of reading another product's config, for any text its syntax accepts:
//! - reading, translating, checking and writing never panic, and give the same
//!   result twice;
//! - the translation is TOML, and the config `import` writes is TOML with the same
//!   meaning (its origin comments and lists change nothing);
//! - every origin is a range of the translation, in order, not overlapping, and points
//!   at a range of a file read; every finding points inside its file.

use evenkeel::fuzzing::{audit_foreign, Product};

pub fn properties(product: Product, data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((translated, report, annotated)) = audit_foreign(product, text) else {
        return;
    };
    let again = audit_foreign(product, text).expect("read twice");
    assert_eq!(again.0.text, translated.text, "not deterministic");
    assert_eq!(again.2, annotated, "not deterministic");
    let table: toml::Table = translated
        .text
        .parse()
        .unwrap_or_else(|e| panic!("the translation is not TOML: {e}\n{}", translated.text));
    let written: toml::Table = annotated
        .parse()
        .unwrap_or_else(|e| panic!("import writes no TOML: {e}\n{annotated}"));
    assert_eq!(table, written, "import's comments changed the config:\n{annotated}");
    let mut end = 0;
    for (range, file, span) in &translated.origins {
        assert!(range.start >= end && range.start < range.end, "origins out of order");
        assert!(range.end <= translated.text.len());
        end = range.end;
        let source = &translated.sources[*file];
        assert!(
            source.text.get(span.clone()).is_some(),
            "an origin outside its file: {span:?}"
        );
    }
    for (file, finding) in &report.findings {
        if let Some(span) = &finding.span {
            assert!(
                report.sources[*file].text.get(span.clone()).is_some(),
                "a finding outside its file: {span:?} {}",
                finding.message
            );
        }
    }
}
