//! Credentials on command lines: process accounting, shell history, cron
//! and CI logs, auditd `EXECVE` records (`a1="-p" a2="secret"`), JSON argv
//! arrays (`["sshpass","-p","secret"]`). A command word (`curl`, `mysql…`,
//! `mariadb…`, `sshpass`) is the trigger; its following arguments are read
//! as tokens up to a shell separator and the tool's credential options are
//! redacted:
//!
//! - `curl -u user:PASS`, `-uuser:PASS`, `--user[=]user:PASS`, `-U` /
//!   `--proxy-user` (the user name stays: only what follows the first `:`;
//!   `-u user` alone makes curl prompt, nothing to hide);
//! - `mysql -pPASS` (and every `mysql*`/`mariadb*` tool): only the attached
//!   form, since `-p` alone prompts and `-P 3306` is the port;
//! - `sshpass -p PASS` / `-pPASS`, up to the wrapped command (whose own
//!   `-p` is, for ssh, a port).
//!
//! `--password=…`, `--password …`, `PGPASSWORD=…`, `MYSQL_PWD=…` and
//! `SSHPASS=…` are names (`names.rs`); `scheme://user:PASS@host` is a URL
//! (`formats.rs`). A command word only counts at the start of a token
//! (`/usr/bin/mysql` does, `curl/8.4.0` and `/docs/mysql-pdo` do not), so
//! ordinary access log lines only pay the trigger's check.

use super::{marker_len, Span, PASSWORD};

/// Bytes of arguments looked at after a command word: bounds the work per
/// hit on crafted lines.
const MAX_ARGS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Curl,
    MySql,
    SshPass,
}

/// The command words, as trigger literals (the tools write them lowercase).
const WORDS: &[&str] = &["curl", "mysql", "mariadb", "sshpass"];

fn token_end_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'"' | b'\'' | b',' | b']' | b'`')
}

fn starts_token(line: &[u8], start: usize) -> bool {
    start == 0
        || matches!(
            line[start - 1],
            b' ' | b'\t' | b'/' | b'"' | b'\'' | b'=' | b'(' | b'[' | b',' | b'`' | b';' | b'|'
        )
}

/// A command word hit at `start..end`: pushes the spans of the credentials
/// in its arguments.
pub(crate) fn find(line: &[u8], start: usize, end: usize, spans: &mut Vec<Span>) {
    if !starts_token(line, start) {
        return;
    }
    let tool = match &line[start..end] {
        b"curl" => Tool::Curl,
        b"sshpass" => Tool::SshPass,
        _ => Tool::MySql,
    };
    let mut p = end;
    if tool == Tool::MySql {
        // mysqldump, mysqladmin, mariadb-dump, mysql8...
        while p < line.len()
            && (line[p].is_ascii_lowercase() || line[p].is_ascii_digit() || line[p] == b'-')
        {
            p += 1;
        }
    }
    if p < line.len() && !token_end_byte(line[p]) {
        return;
    }
    // The quote closing the command word's own quoting (`"curl","-u"`).
    if matches!(line.get(p), Some(b'"' | b'\'')) {
        p += 1;
    }
    let limit = line.len().min(p.saturating_add(MAX_ARGS));
    let args = Args {
        line,
        pos: p,
        limit,
    };
    // The option whose value is the next token.
    let mut takes_value = false;
    for token in args {
        let text = &line[token.start..token.end];
        if takes_value {
            takes_value = false;
            match tool {
                Tool::Curl => after_colon(line, token, spans),
                _ => {
                    push(line, token.start, token.end, spans);
                    if tool == Tool::SshPass {
                        return;
                    }
                }
            }
            continue;
        }
        if WORDS.iter().any(|w| text.starts_with(w.as_bytes())) {
            // The next command is looked at from its own trigger.
            return;
        }
        match tool {
            Tool::Curl => {
                if let Some(value) = text
                    .strip_prefix(b"--user=")
                    .or_else(|| text.strip_prefix(b"--proxy-user="))
                {
                    let from = token.end - value.len();
                    after_colon(
                        line,
                        Token {
                            start: from,
                            ..token
                        },
                        spans,
                    );
                } else if matches!(text, b"--user" | b"--proxy-user") {
                    takes_value = true;
                } else if text.len() >= 2 && text[0] == b'-' && text[1] != b'-' {
                    // `-u`, `-su`, `-U`: the value follows; `-uuser:pass`:
                    // attached.
                    let flags = &text[1..];
                    if let Some(i) = flags.iter().position(|&b| b == b'u' || b == b'U') {
                        let attached = token.start + 2 + i;
                        if attached < token.end {
                            if flags[..i].iter().all(u8::is_ascii_alphabetic) {
                                after_colon(
                                    line,
                                    Token {
                                        start: attached,
                                        ..token
                                    },
                                    spans,
                                );
                            }
                        } else if flags.iter().all(u8::is_ascii_alphabetic) {
                            takes_value = true;
                        }
                    }
                }
            }
            Tool::MySql => {
                if text.len() > 2 && text.starts_with(b"-p") {
                    push(line, token.start + 2, token.end, spans);
                }
            }
            Tool::SshPass => {
                if text == b"-p" {
                    takes_value = true;
                } else if text.len() > 2 && text.starts_with(b"-p") {
                    push(line, token.start + 2, token.end, spans);
                    return;
                } else if !text.starts_with(b"-") {
                    return; // the wrapped command: its options are its own
                }
            }
        }
    }
}

/// One argument: its text without surrounding quotes.
#[derive(Debug, Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
}

struct Args<'a> {
    line: &'a [u8],
    pos: usize,
    limit: usize,
}

impl Iterator for Args<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let line = self.line;
        let mut p = self.pos;
        while p < self.limit
            && (matches!(line[p], b' ' | b'\t' | b',' | b']')
                || (line[p] == b'[' && marker_len(&line[p..]).is_none()))
        {
            p += 1;
        }
        if p >= self.limit
            || matches!(line[p], b';' | b'|' | b'`' | b')' | b'\r' | b'\n')
            || line[p..].starts_with(b"&&")
        {
            return None;
        }
        // auditd EXECVE: `a2="secret"`.
        if line[p] == b'a' {
            let digits = line[p + 1..]
                .iter()
                .take(4)
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > 0 && line.get(p + 1 + digits) == Some(&b'=') {
                p += 2 + digits;
            }
        }
        let token = match line.get(p) {
            Some(&q @ (b'"' | b'\'')) => {
                let from = p + 1;
                let to = memchr::memchr(q, &line[from.min(line.len())..])
                    .map_or(line.len(), |i| from + i);
                self.pos = (to + 1).min(line.len());
                Token {
                    start: from,
                    end: to,
                }
            }
            _ => {
                let to = value_end(line, p);
                self.pos = to;
                Token { start: p, end: to }
            }
        };
        Some(token)
    }
}

/// An unquoted argument ends at a blank or a quote; `-p'pass word'` keeps
/// its quoted part.
fn value_end(line: &[u8], from: usize) -> usize {
    if let Some(m) = marker_len(&line[from.min(line.len())..]) {
        return from + m;
    }
    let mut i = from;
    while i < line.len() {
        match line[i] {
            b' ' | b'\t' | b'\r' | b'\n' | b',' | b';' | b'|' | b'`' => break,
            q @ (b'"' | b'\'') => {
                // A quote right after an option (`-p'x y'`, `--user="a:b c"`)
                // runs to its mate; any other closes the quoting around the
                // command and ends the token.
                if i == from {
                    break;
                }
                let after_option = (i == from + 2 && line[from] == b'-') || line[i - 1] == b'=';
                if !after_option {
                    break;
                }
                match memchr::memchr(q, &line[i + 1..]) {
                    Some(j) => i += j + 2,
                    None => return line.len(),
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// `user:PASS`: the part after the first colon.
fn after_colon(line: &[u8], token: Token, spans: &mut Vec<Span>) {
    let text = &line[token.start..token.end];
    if let Some(i) = memchr::memchr(b':', text) {
        // The colon of a marker (`[REDACTED:…]`) is no user:password.
        if !text[..i].ends_with(b"[REDACTED") {
            push(line, token.start + i + 1, token.end, spans);
        }
    }
}

fn push(line: &[u8], mut start: usize, mut end: usize, spans: &mut Vec<Span>) {
    // `-p'pass word'`, `-p"…"`: the quotes are not the secret.
    if end >= start + 2 && matches!(line[start], b'"' | b'\'') && line[end - 1] == line[start] {
        start += 1;
        end -= 1;
    }
    if end <= start || marker_len(&line[start..]).is_some() {
        return;
    }
    spans.push(Span {
        start,
        end,
        kind: PASSWORD,
    });
}
