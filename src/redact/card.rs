//! Payment card numbers: 13-19 digits, written plain or in groups joined by
//! single spaces (also as a query string writes them: `+`, `%20`) or dashes, with a card network's prefix and length, that
//! pass the Luhn check. Timestamps, IPs, decimals, UUIDs, byte counts and
//! epoch times fail one of those tests (epoch seconds to nanoseconds start
//! with 1, which no card network uses).

use super::{Span, CARD};

const MAX_GROUPS: usize = 8;

fn card_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b' ' | b'-' | b'+' | b'%')
}

/// The separator between two digit groups at `line[j..]`: its kind (a
/// space, however written, or a dash) and its length. A number typed with
/// spaces into a form reaches a query string as `+` or `%20`.
fn separator(line: &[u8], j: usize) -> Option<(u8, usize)> {
    match line.get(j)? {
        b' ' | b'+' => Some((b' ', 1)),
        b'-' => Some((b'-', 1)),
        b'%' if line.get(j + 1..j + 3) == Some(b"20") => Some((b' ', 3)),
        _ => None,
    }
}

/// Any stretch of digits, spaces and dashes long enough to hold a card
/// covers one of every 13th byte: probing those skips most of a line (a
/// byte-by-byte pass cost more than the whole trigger search).
pub(crate) fn find_cards(line: &[u8], spans: &mut Vec<Span>) {
    let n = line.len();
    let mut probe = 12;
    while probe < n {
        if !card_byte(line[probe]) {
            probe += 13;
            continue;
        }
        let mut start = probe;
        while start > 0 && card_byte(line[start - 1]) {
            start -= 1;
        }
        let mut end = probe + 1;
        while end < n && card_byte(line[end]) {
            end += 1;
        }
        if end - start >= 13 {
            scan_region(line, start, end, spans);
        }
        probe = end + 12;
    }
}

/// Digit groups inside `line[from..to]`, a maximal stretch of card bytes.
fn scan_region(line: &[u8], from: usize, to: usize, spans: &mut Vec<Span>) {
    let n = line.len();
    let mut i = from;
    while i < to {
        if !line[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let run_start = i;
        let mut groups = [(0usize, 0usize); MAX_GROUPS];
        let mut count = 0;
        let mut sep = 0u8;
        let mut j = i;
        loop {
            let group_start = j;
            while j < n && line[j].is_ascii_digit() {
                j += 1;
            }
            groups[count] = (group_start, j);
            count += 1;
            let joined = separator(line, j).filter(|&(kind, len)| {
                (sep == 0 || sep == kind) && line.get(j + len).is_some_and(u8::is_ascii_digit)
            });
            let Some((kind, len)) = joined.filter(|_| count < MAX_GROUPS) else {
                break;
            };
            sep = kind;
            j += len;
        }
        let groups = &groups[..count];
        check_run(
            line,
            groups,
            boundary_before(line, run_start),
            boundary_after(line, j),
            spans,
        );
        i = j;
    }
}

fn boundary_before(line: &[u8], s: usize) -> bool {
    if s == 0 {
        return true;
    }
    let p = line[s - 1];
    // A decimal's fraction (`0.4111…`) is not a card.
    let fraction = p == b'.' && s >= 2 && line[s - 2].is_ascii_digit();
    !(p.is_ascii_alphanumeric() || fraction)
}

fn boundary_after(line: &[u8], e: usize) -> bool {
    match line.get(e) {
        None => true,
        Some(&c) => {
            let decimal = c == b'.' && line.get(e + 1).is_some_and(u8::is_ascii_digit);
            !(c.is_ascii_alphanumeric() || decimal)
        }
    }
}

fn check_run(
    line: &[u8],
    groups: &[(usize, usize)],
    before_ok: bool,
    after_ok: bool,
    spans: &mut Vec<Span>,
) {
    let last = groups.len() - 1;
    // One unbroken number.
    for (g, &(s, e)) in groups.iter().enumerate() {
        let edges = (g > 0 || before_ok) && (g < last || after_ok);
        if edges && (13..=19).contains(&(e - s)) && is_card(&line[s..e]) {
            spans.push(Span {
                start: s,
                end: e,
                kind: CARD,
            });
        }
    }
    // Grouped as printed on cards (4-4-4-4, 4-6-5, ...): groups of 3-6.
    let short = |&(s, e): &(usize, usize)| (3..=6).contains(&(e - s));
    let mut a = 0;
    while a < groups.len() {
        if !short(&groups[a]) || (a == 0 && !before_ok) {
            a += 1;
            continue;
        }
        let mut digits = [0u8; 19];
        let mut len = 0;
        let mut found = None;
        for (b, &(s, e)) in groups.iter().enumerate().skip(a) {
            if !short(&(s, e)) || len + (e - s) > 19 {
                break;
            }
            digits[len..len + (e - s)].copy_from_slice(&line[s..e]);
            len += e - s;
            if b > a && len >= 13 && (b < last || after_ok) && is_card(&digits[..len]) {
                found = Some(b);
                break;
            }
        }
        match found {
            Some(b) => {
                spans.push(Span {
                    start: groups[a].0,
                    end: groups[b].1,
                    kind: CARD,
                });
                a = b + 1;
            }
            None => a += 1,
        }
    }
}

/// A network's prefix and length, and the Luhn checksum.
pub(crate) fn is_card(digits: &[u8]) -> bool {
    plausible_network(digits) && luhn(digits)
}

fn prefix(digits: &[u8], k: usize) -> u32 {
    digits[..k]
        .iter()
        .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'))
}

fn plausible_network(d: &[u8]) -> bool {
    let n = d.len();
    let range = |lo: usize, hi: usize| (lo..=hi).contains(&n);
    match d[0] {
        // Visa
        b'4' => matches!(n, 13 | 16 | 19),
        // Mastercard 2-series
        b'2' => (2221..=2720).contains(&prefix(d, 4)) && n == 16,
        b'3' => {
            let p2 = prefix(d, 2);
            // Amex; JCB; Diners
            ((p2 == 34 || p2 == 37) && n == 15)
                || ((3528..=3589).contains(&prefix(d, 4)) && range(16, 19))
                || (((300..=305).contains(&prefix(d, 3)) || matches!(p2, 36 | 38 | 39))
                    && range(14, 19))
        }
        b'5' => {
            let p2 = prefix(d, 2);
            // Mastercard; Maestro
            ((51..=55).contains(&p2) && n == 16) || ((p2 == 50 || p2 >= 56) && range(13, 19))
        }
        // Discover, UnionPay, Maestro, RuPay
        b'6' => range(13, 19),
        _ => false,
    }
}

pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}
