//! Glob patterns of the spec (CPU, product, GPU and disk models): `*`
//! matches any run of characters, `?` one character, everything else
//! itself. Case-insensitive; runs of whitespace count as one space on both
//! sides; the whole value must match. One matcher for the orchestrator's
//! spec diff and the agent's device allowlist.

/// Whether `value` matches the glob `pattern` (see the module docs).
pub fn glob_matches(pattern: &str, value: &str) -> bool {
    let pattern: Vec<char> = normalize(pattern).chars().collect();
    let value: Vec<char> = normalize(value).chars().collect();
    // the classic linear backtracking matcher: remember the last `*`
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == value[v]) {
            p += 1;
            v += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, v));
            p += 1;
        } else if let Some((star_p, star_v)) = star {
            p = star_p + 1;
            v = star_v + 1;
            star = Some((star_p, star_v + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs_match_whole_values_case_insensitively() {
        let cpu = "Intel(R) Xeon(R) CPU E5-2620 0 @ 2.00GHz";
        assert!(glob_matches("*E5-2620*", cpu));
        assert!(glob_matches("*e5-2620 0 @*", cpu));
        assert!(glob_matches(
            "intel(r) xeon(r)   cpu e5-2620 0 @ 2.00ghz",
            cpu
        ));
        assert!(!glob_matches("E5-2620", cpu));
        assert!(!glob_matches("*E5-2620 v4*", cpu));
        assert!(glob_matches("MZ7LH1T9HMLT-0000?", "MZ7LH1T9HMLT-00005"));
        assert!(glob_matches(
            "samsung   mz7lh*",
            "SAMSUNG MZ7LH1T9HMLT-00005"
        ));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("?", ""));
        assert!(glob_matches("a?c", "abc"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
    }
}
