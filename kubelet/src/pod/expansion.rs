//! `$(VAR)` expansion in env values, commands, args and `subPathExpr`.
//!
//! Owns upstream's `third_party/forked/golang/expansion` rules byte for byte: `$(NAME)` is
//! replaced through a mapping, `$$` is an escaped `$`, an unterminated `$(` and a `$` before any
//! other character are kept as written, and unresolvable references stay as `$(NAME)`. Never
//! decides where the variables come from (that is `env`).

/// Expands `input` with `mapping`, which receives every complete `$(NAME)` reference's `NAME`
/// and returns its replacement (upstream `expansion.Expand`).
pub fn expand_with(input: &str, mut mapping: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        match after.chars().next() {
            // A trailing `$` is copied as it is.
            None => {
                out.push('$');
                rest = after;
            }
            // `$$` → `$`.
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    out.push_str(&mapping(&after[1..close]));
                    rest = &after[close + 1..];
                }
                // Incomplete reference: keep `$(` and go on after it.
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            // Not an expression: keep `$` and the character after it.
            Some(other) => {
                out.push('$');
                out.push(other);
                rest = &after[other.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Expands `input`, looking names up in `lookup` and leaving unresolved references as
/// `$(NAME)` (upstream `MappingFuncFor`).
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    expand_with(input, |name| {
        lookup(name).unwrap_or_else(|| format!("$({name})"))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
            ("BLANK", " "),
        ])
    }

    fn run(input: &str) -> String {
        let vars = vars();
        expand(input, |name| vars.get(name).map(|v| (*v).to_owned()))
    }

    // The table is upstream's expand_test.go (TestMapReference / TestMapping).
    #[test]
    fn expansion_matches_upstream_table() {
        for (input, expected) in [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("___$(VAR_C)", "___C"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("$(VAR_A)-1", "A-1"),
            ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
            ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
            ("$$(VAR_A)$(VAR_A)", "$(VAR_A)A"),
            ("foo\\$(VAR_C)bar", "foo\\Cbar"),
            ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
            ("foo\\\\\\\\$(VAR_A)bar", "foo\\\\\\\\Abar"),
            ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
            ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
            ("$(VAR_REF)", "$(VAR_A)"),
            ("%%$(VAR_REF)--$(VAR_REF)%%", "%%$(VAR_A)--$(VAR_A)%%"),
            ("foo$(VAR_EMPTY)bar", "foobar"),
            ("$(VAR_A)$(BLANK)$(VAR_B)", "A B"),
            ("$(VAR_DNE)", "$(VAR_DNE)"),
            ("$(VAR_A)-$(VAR_DNE)", "A-$(VAR_DNE)"),
            ("$()", "$()"),
            ("$(VAR_A)$(VAR_DNE)", "A$(VAR_DNE)"),
            ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
            ("$$$$$$(VAR_A)", "$$$(VAR_A)"),
            ("$$$$$$$(GOOD_ODDS)", "$$$$(GOOD_ODDS)"),
            ("$$$$$$$(VAR_A)", "$$$A"),
            ("$(VAR_A)$(VAR_A", "A$(VAR_A"),
            ("$(VAR_A", "$(VAR_A"),
            ("$VAR_A", "$VAR_A"),
            ("$$VAR_A", "$VAR_A"),
            ("$$$VAR_A", "$$VAR_A"),
            ("$", "$"),
            ("$$", "$"),
            ("$$$", "$$"),
            ("$$$$", "$$"),
            ("$$$$$", "$$$"),
            ("$$$$$$", "$$$"),
            ("$(", "$("),
            ("$$(", "$("),
            ("$$$(", "$$("),
            ("$ (VAR_A)", "$ (VAR_A)"),
            ("$é(VAR_A)", "$é(VAR_A)"),
            ("", ""),
            ("no refs", "no refs"),
        ] {
            assert_eq!(run(input), expected, "{input:?}");
        }
    }

    #[test]
    fn long_escape_runs_halve() {
        for pairs in [1, 7, 60] {
            let input = format!("{}(VAR_A)", "$".repeat(2 * pairs));
            assert_eq!(run(&input), format!("{}(VAR_A)", "$".repeat(pairs)));
            let input = format!("{}$(VAR_A)", "$".repeat(2 * pairs));
            assert_eq!(run(&input), format!("{}A", "$".repeat(pairs)));
        }
    }

    #[test]
    fn mapping_sees_every_complete_reference_in_order() {
        let mut seen = Vec::new();
        let out = expand_with("$(A)-$$(B)-$(C", |name| {
            seen.push(name.to_owned());
            String::new()
        });
        assert_eq!(out, "-$(B)-$(C");
        assert_eq!(seen, ["A"]);
    }
}
