//! Orders run in text order; this module finds orders whose numbers say
//! otherwise (`1_10` sorts before `1_2` as text), which validation refuses.

use std::cmp::Ordering;

/// Compares two orders segment by segment, runs of ASCII digits as numbers
/// and everything else as text: the order a reader expects.
fn numeric_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (segments(a), segments(b));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (is_number(x), is_number(y)) {
                    (true, true) => {
                        let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                        x.len().cmp(&y.len()).then_with(|| x.cmp(y))
                    }
                    _ => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

fn is_number(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

/// Splits `v1_10b` into `v`, `1`, `_`, `10`, `b`.
fn segments(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let first = rest.as_bytes().first()?;
        let digit = first.is_ascii_digit();
        let end = rest
            .bytes()
            .position(|b| b.is_ascii_digit() != digit)
            .unwrap_or(rest.len());
        let (seg, tail) = rest.split_at(end);
        rest = tail;
        Some(seg)
    })
}

/// The pairs of `orders` that run one way (text order, the first of each
/// pair first) while their numeric segments say the other way, e.g.
/// `("1_10", "1_2")`. Empty when text and numbers agree, which is what
/// zero-padded orders (`0001`, `1_02`) always do.
///
/// Neighbours in text order are compared, so each inversion is reported
/// where it shows, not once per pair of changes.
///
/// ```
/// use flamingock_core::order::numeric_order_conflicts;
///
/// assert_eq!(
///     numeric_order_conflicts(["V1_1", "V1_2", "V1_10"]),
///     [("V1_10", "V1_2")]
/// );
/// assert!(numeric_order_conflicts(["0001", "0002", "0010"]).is_empty());
/// assert!(numeric_order_conflicts(["a", "b1", "b2"]).is_empty());
/// ```
pub fn numeric_order_conflicts<'a>(
    orders: impl IntoIterator<Item = &'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut sorted: Vec<&str> = orders.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
        .windows(2)
        .filter(|w| numeric_cmp(w[0], w[1]) == Ordering::Greater)
        .map(|w| (w[0], w[1]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_numbers_disagree_only_on_unpadded_numbers() {
        assert_eq!(
            numeric_order_conflicts(["1_1", "1_2", "1_10"]),
            [("1_10", "1_2")]
        );
        assert_eq!(numeric_order_conflicts(["9", "10"]), [("10", "9")]);
        assert_eq!(numeric_order_conflicts(["2", "10_a"]), [("10_a", "2")]);
        // Each inversion once, where it shows in text order.
        assert_eq!(
            numeric_order_conflicts(["1", "2", "3", "10", "11"]),
            [("11", "2")]
        );
        for ok in [
            &["1_01", "1_02", "1_10"][..],
            &["1", "10"],
            &["a", "b", "c10"],
            &["000001", "000001-old", "000002"],
            &["01", "1"],
            &["2024-01-31", "2024-12-01"],
            &[],
        ] {
            assert!(
                numeric_order_conflicts(ok.iter().copied()).is_empty(),
                "{ok:?}"
            );
        }
    }
}
