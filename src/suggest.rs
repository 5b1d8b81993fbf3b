//! "Did you mean": the valid name nearest to a typo, for error messages.

/// The candidate nearest to `word` when it is near enough to be a typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_picks_typos_only() {
        assert_eq!(closest("crp", ["crop", "fetch"]).as_deref(), Some("crop"));
        assert_eq!(closest("zzzzzz", ["crop", "fetch"]), None);
    }
}
