//! Version ordering the way `sort -V` and dkms order kernel and module versions: digit runs compare
//! as numbers, everything else byte by byte, `~` sorts before anything (Debian convention).

use std::cmp::Ordering;

/// Compares two version strings naturally (`6.1.0-9` < `6.1.0-47`, `1.0~rc1` < `1.0`).
pub fn cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (Some(b'~'), Some(b'~')) => {
                a = &a[1..];
                b = &b[1..];
            }
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let da = trim_zeros(&a[..na]);
                let db = trim_zeros(&b[..nb]);
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                // Letters before other characters, as dpkg orders non-digit parts.
                let ord = weight(*x).cmp(&weight(*y));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let first = d.iter().position(|c| *c != b'0').unwrap_or(d.len());
    &d[first..]
}

fn weight(c: u8) -> u16 {
    if c.is_ascii_alphabetic() {
        c as u16
    } else {
        c as u16 + 256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_sort_v() {
        let mut v = vec!["6.1.0-47-amd64", "6.1.0-9-amd64", "5.10.0-28-amd64", "6.10.1", "6.1.0-47-cloud-amd64", "6.2"];
        v.sort_by(|a, b| cmp(a, b));
        assert_eq!(
            v,
            vec!["5.10.0-28-amd64", "6.1.0-9-amd64", "6.1.0-47-amd64", "6.1.0-47-cloud-amd64", "6.2", "6.10.1"]
        );
    }

    #[test]
    fn tilde_and_zeros() {
        assert_eq!(cmp("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(cmp("1.0", "1.0.1"), Ordering::Less);
        assert_eq!(cmp("1.01", "1.1"), Ordering::Equal);
        assert_eq!(cmp("535.104.05", "535.54.03"), Ordering::Greater);
        assert_eq!(cmp("2.0a", "2.0+"), Ordering::Less);
    }
}
