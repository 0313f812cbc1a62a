//! SQL injection, libinjection-style: the value is tokenized as SQL in the
//! three contexts an application may paste it into (bare, inside `'...'`,
//! inside `"..."`), comments and whitespace tricks fold away, and the token
//! sequence is matched against the shapes an injection must take to change
//! a query: leave the string and continue with logic, a comment, a
//! statement or a union; call a function no input calls; append a
//! clause. A word like `select` or an apostrophe alone never fires: the
//! structure around it decides (`O'Brien`, `rock and roll`, `select a
//! union representative` stay quiet).

/// What a token is, after keywords are classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum K {
    /// A quoted string; `closed` when its quote was found.
    Str {
        closed: bool,
    },
    Num,
    /// A bareword that is not a keyword.
    Word,
    /// A word directly followed by `(`.
    Func(F),
    /// `@x`, `@@x` (`sys` when `@@`).
    Var {
        sys: bool,
    },
    /// Arithmetic, bit and concatenation operators.
    Op,
    /// `=`, `<`, `>`, `<>`, `!=`, `<=>`.
    Cmp,
    /// `like`, `rlike`, `regexp`, `in`, `is`, `between`, `sounds`: words
    /// that also occur in prose (`"LIKE" STAMP`), so weaker than symbols.
    CmpWord,
    /// `and`, `or`, `xor`, `&&`, `||`.
    Logic,
    /// `not`, `!`.
    Not,
    Kw(W),
    LParen,
    RParen,
    Comma,
    Semi,
    Dot,
    /// A comment that ends the input (`--`, `#`, `/*`): what a payload
    /// uses to cut off the rest of the query. Comments followed by more
    /// tokens are whitespace.
    Comment,
}

/// Keywords that matter to the shapes below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum W {
    Union,
    Select,
    /// Starts a statement after `;` (insert, update, delete, drop, ...).
    Stmt,
    From,
    Where,
    Order,
    Group,
    By,
    Having,
    Limit,
    Into,
    /// null, true, false: operands.
    Lit,
    AllDistinct,
    Case,
    When,
    Waitfor,
    Exec,
    Declare,
    Procedure,
    /// outfile, dumpfile.
    File,
    /// offset, top, as, ... : keywords that end a select list.
    Other,
}

/// Function classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum F {
    /// Used by injections and by nothing a user types: sleep, benchmark,
    /// extractvalue, load_file, xp_cmdshell...
    Strong,
    Plain,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    k: K,
    /// The token's bytes in the value (for strings: with their quotes).
    start: u32,
    end: u32,
    /// A `#` comment (MySQL only, and common in prose: `#1 seller`).
    hash: bool,
}

/// Tokens kept per context: enough for every shape below; the rest of a
/// long value is scanned for the context-free shapes only.
const MAX_TOKENS: usize = 48;

#[derive(Debug, Default)]
pub struct Sqli {
    toks: Vec<Tok>,
    /// Where the token being read started.
    at: usize,
    /// The value with comments inside words taken out.
    joined: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Bare,
    Quote(u8),
}

impl Sqli {
    /// True when the normalised (decoded, lowercased) value holds SQL
    /// injection in any context.
    pub fn detect(&mut self, s: &[u8]) -> bool {
        if self.detect_as_is(s) {
            return true;
        }
        // `uni/**/on sel/**/ect`: a filter that deletes comments joins the
        // words again; the query it passes on is read here.
        if memchr::memmem::find(s, b"/*").is_none() {
            return false;
        }
        let mut joined = std::mem::take(&mut self.joined);
        let hit = join_split_words(s, &mut joined) && self.detect_as_is(&joined);
        self.joined = joined;
        hit
    }

    fn detect_as_is(&mut self, s: &[u8]) -> bool {
        if !plausible(s) {
            return false;
        }
        for ctx in [Ctx::Bare, Ctx::Quote(b'\''), Ctx::Quote(b'"')] {
            if ctx != Ctx::Bare {
                if let Ctx::Quote(q) = ctx {
                    if memchr::memchr(q, s).is_none() {
                        continue;
                    }
                }
            }
            if !self.tokenize(s, ctx) {
                continue;
            }
            if shapes(&self.toks, s, ctx) {
                return true;
            }
        }
        false
    }

    /// Fills `toks`; false when the context does not apply (no closing
    /// quote to break out of).
    fn tokenize(&mut self, s: &[u8], ctx: Ctx) -> bool {
        self.toks.clear();
        let mut i = 0;
        if let Ctx::Quote(q) = ctx {
            match string_end(s, 0, q) {
                Some(end) => {
                    self.toks.push(Tok {
                        k: K::Str { closed: true },
                        start: 0,
                        end: end as u32,
                        hash: false,
                    });
                    i = end;
                }
                None => return false,
            }
        }
        let n = s.len();
        while i < n && self.toks.len() < MAX_TOKENS {
            let c = s[i];
            self.at = i;
            match c {
                // `+` is how the lists and many clients write a space; NUL
                // and bytes past ASCII separate tokens as whitespace does.
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | b'+' | 0 | 0x80..=0xff => i += 1,
                b'\'' | b'"' => match string_end(s, i + 1, c) {
                    Some(end) => {
                        self.push(K::Str { closed: true });
                        i = end;
                    }
                    None => {
                        self.push(K::Str { closed: false });
                        i = n;
                    }
                },
                b'`' => {
                    // A quoted identifier.
                    i = memchr::memchr(b'`', &s[i + 1..]).map_or(n, |p| i + p + 2);
                    self.push(K::Word);
                }
                // MySQL wants a space after `--`; others do not, and a
                // quote or parenthesis right before (`1'--sp_password`)
                // leaves no doubt.
                b'-' if s.get(i + 1) == Some(&b'-')
                    && (s.get(i + 2).is_none_or(|c| {
                        c.is_ascii_whitespace() || matches!(*c, b'-' | b'+') || *c < 0x20
                    }) || matches!(
                        self.toks.last().map(|t| t.k),
                        Some(K::Str { closed: true } | K::RParen)
                    )) =>
                {
                    i = line_end(s, i);
                    self.comment(s, i, false);
                }
                b'#' => {
                    i = line_end(s, i);
                    self.comment(s, i, true);
                }
                b'/' if s.get(i + 1) == Some(&b'*') => {
                    if s.get(i + 2) == Some(&b'!') {
                        // MySQL runs `/*!50000 union*/`: the body is code.
                        i += 3;
                        while i < n && s[i].is_ascii_digit() {
                            i += 1;
                        }
                    } else {
                        i = memchr::memmem::find(&s[i + 2..], b"*/").map_or(n, |p| i + p + 4);
                        self.comment(s, i, false);
                    }
                }
                b'*' if s.get(i + 1) == Some(&b'/') => i += 2,
                b'0'..=b'9' => {
                    i = number_end(s, i);
                    self.push(K::Num);
                }
                b'.' if s.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    i = number_end(s, i);
                    self.push(K::Num);
                }
                b'a'..=b'z' | b'_' | b'$' => {
                    let start = i;
                    while i < n && (s[i].is_ascii_alphanumeric() || matches!(s[i], b'_' | b'$')) {
                        i += 1;
                    }
                    let word = &s[start..i];
                    let next = skip_space(s, i);
                    // `f (x)` with a space is a call for the functions only
                    // injections use: prose puts a space before its
                    // parentheses (`the Whale (2005)`, `Version (June)`).
                    // Newlines, tabs or a comment before the parenthesis
                    // are an evasion, not typing.
                    let call = s.get(i) == Some(&b'(')
                        || s.get(next) == Some(&b'(')
                            && (strong_function(word) && !prose_word(word)
                                || s[i..next].iter().any(|c| *c != b' '));
                    let k = match classify(word, call) {
                        // `wifi-having-hardblocked`, `rock-and-roll`: a
                        // keyword glued by hyphens to letters is a slug's
                        // word; SQL's minus takes a number or an expression.
                        K::Kw(_) | K::Logic | K::CmpWord | K::Not if in_slug(s, start, i) => {
                            K::Word
                        }
                        k => k,
                    };
                    self.push(k);
                }
                b'@' => {
                    let sys = s.get(i + 1) == Some(&b'@');
                    i += if sys { 2 } else { 1 };
                    while i < n
                        && (s[i].is_ascii_alphanumeric() || matches!(s[i], b'_' | b'$' | b'.'))
                    {
                        i += 1;
                    }
                    self.push(K::Var { sys });
                }
                b'(' => {
                    i += 1;
                    self.push(K::LParen);
                }
                b')' => {
                    i += 1;
                    self.push(K::RParen);
                }
                b',' => {
                    i += 1;
                    self.push(K::Comma);
                }
                b';' => {
                    i += 1;
                    self.push(K::Semi);
                }
                b'.' => {
                    i += 1;
                    self.push(K::Dot);
                }
                b'=' => {
                    i += 1;
                    self.push(K::Cmp);
                }
                b'<' | b'>' | b'!' => {
                    let next = s.get(i + 1).copied();
                    let k = match (c, next) {
                        (b'!', Some(b'=')) | (b'<', Some(b'=' | b'>')) | (b'>', Some(b'=')) => {
                            i += 2;
                            if s.get(i) == Some(&b'>') {
                                i += 1; // <=>
                            }
                            K::Cmp
                        }
                        (b'!', _) => {
                            i += 1;
                            K::Not
                        }
                        _ => {
                            i += 1;
                            K::Cmp
                        }
                    };
                    self.push(k);
                }
                b'|' | b'&' if s.get(i + 1) == Some(&c) => {
                    i += 2;
                    self.push(K::Logic);
                }
                b'-' | b'*' | b'/' | b'%' | b'^' | b'|' | b'&' | b'~' | b':' => {
                    i += 1;
                    self.push(K::Op);
                }
                _ => {
                    // Anything else (`{`, `[`, `\`, `?`): a word-like
                    // operand that breaks no shape and makes none.
                    i += 1;
                    self.push(K::Word);
                }
            }
            if let Some(t) = self.toks.last_mut() {
                if t.start as usize >= self.at {
                    t.end = i as u32;
                }
            }
        }
        true
    }

    /// Pushes a token that started at `self.at`; its end is set once
    /// the tokenizer has moved past it.
    fn push(&mut self, k: K) {
        self.toks.push(Tok {
            k,
            start: self.at as u32,
            end: self.at as u32,
            hash: false,
        });
    }

    /// A comment counts only when nothing but whitespace follows it.
    fn comment(&mut self, s: &[u8], end: usize, hash: bool) {
        if s[end.min(s.len())..]
            .iter()
            .all(|c| c.is_ascii_whitespace() || *c == b'+' || *c == 0)
        {
            self.push(K::Comment);
            if let Some(t) = self.toks.last_mut() {
                t.hash = hash;
            }
        }
    }
}

/// Copies `s` into `out` without the comments that split a word (a letter
/// on each side: `sel/**/ect`); false when there was none.
fn join_split_words(s: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut joined = false;
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(b"/*") && i > 0 && s[i - 1].is_ascii_alphabetic() {
            if let Some(p) = memchr::memmem::find(&s[i + 2..], b"*/") {
                let after = i + 2 + p + 2;
                if s.get(after).is_some_and(u8::is_ascii_alphabetic) {
                    joined = true;
                    i = after;
                    continue;
                }
            }
        }
        out.push(s[i]);
        i += 1;
    }
    joined
}

/// Cheap test: a value without any of these bytes or keywords cannot hold
/// an injection this detector would find.
fn plausible(s: &[u8]) -> bool {
    s.iter().any(|&c| {
        matches!(
            c,
            b'\''
                | b'"'
                | b'`'
                | b'('
                | b';'
                | b'#'
                | b'='
                | b'<'
                | b'>'
                | b'|'
                | b'&'
                | b'@'
                | b'*'
                | b' '
                | b'\t'
                | b'\n'
                | b'-'
                | b'+'
                | 0
        )
    })
}

/// The end (one past the closing quote) of a string whose body starts at
/// `i`; a doubled quote is an escaped one.
fn string_end(s: &[u8], mut i: usize, q: u8) -> Option<usize> {
    loop {
        let p = memchr::memchr(q, s.get(i..)?)?;
        let j = i + p;
        if s.get(j + 1) == Some(&q) {
            i = j + 2;
            continue;
        }
        return Some(j + 1);
    }
}

fn line_end(s: &[u8], i: usize) -> usize {
    memchr::memchr2(b'\n', b'\r', &s[i..]).map_or(s.len(), |p| i + p)
}

fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    // `sleep/**/(5)`
    if s[i.min(s.len())..].starts_with(b"/*") {
        if let Some(p) = memchr::memmem::find(&s[i + 2..], b"*/") {
            return skip_space(s, i + p + 4);
        }
    }
    i
}

fn number_end(s: &[u8], mut i: usize) -> usize {
    let n = s.len();
    if s[i] == b'0' && i + 1 < n && matches!(s[i + 1], b'x' | b'b') {
        i += 2;
        while i < n && s[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < n && (s[i].is_ascii_digit() || s[i] == b'.') {
        i += 1;
    }
    if i < n
        && s[i] == b'e'
        && i + 1 < n
        && (s[i + 1].is_ascii_digit() || matches!(s[i + 1], b'+' | b'-'))
    {
        i += 2;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
    }
    i
}

fn classify(w: &[u8], call: bool) -> K {
    let kw = match w {
        b"union" => Some(K::Kw(W::Union)),
        b"select" => Some(K::Kw(W::Select)),
        b"insert" | b"update" | b"delete" | b"drop" | b"create" | b"alter" | b"truncate"
        | b"shutdown" | b"grant" | b"revoke" | b"replace" | b"rename" | b"call" | b"begin"
        | b"load" | b"handler" | b"set" => Some(K::Kw(W::Stmt)),
        b"from" => Some(K::Kw(W::From)),
        b"where" => Some(K::Kw(W::Where)),
        b"order" => Some(K::Kw(W::Order)),
        b"group" => Some(K::Kw(W::Group)),
        b"by" => Some(K::Kw(W::By)),
        b"having" => Some(K::Kw(W::Having)),
        b"limit" => Some(K::Kw(W::Limit)),
        b"into" => Some(K::Kw(W::Into)),
        b"null" | b"true" | b"false" => Some(K::Kw(W::Lit)),
        b"all" | b"distinct" | b"distinctrow" => Some(K::Kw(W::AllDistinct)),
        b"case" => Some(K::Kw(W::Case)),
        b"when" => Some(K::Kw(W::When)),
        b"waitfor" => Some(K::Kw(W::Waitfor)),
        b"exec" | b"execute" => Some(K::Kw(W::Exec)),
        b"declare" => Some(K::Kw(W::Declare)),
        b"procedure" => Some(K::Kw(W::Procedure)),
        b"outfile" | b"dumpfile" => Some(K::Kw(W::File)),
        b"offset" | b"top" | b"as" | b"for" | b"then" | b"else" | b"end" | b"on" | b"join"
        | b"values" => Some(K::Kw(W::Other)),
        b"and" | b"or" | b"xor" => Some(K::Logic),
        b"not" => Some(K::Not),
        b"div" | b"mod" => Some(K::Op),
        b"like" | b"rlike" | b"regexp" | b"is" | b"in" | b"between" | b"sounds" | b"glob"
        | b"match" => Some(K::CmpWord),
        _ => None,
    };
    if call {
        if strong_function(w) {
            return K::Func(F::Strong);
        }
        // `select(1)`, `union(select`, `in(1)`, `and(1=1)`: keywords
        // stay keywords before a parenthesis.
        if let Some(k) = kw {
            return k;
        }
        return K::Func(F::Plain);
    }
    kw.unwrap_or(K::Word)
}

/// Whether the word at `start..end` has a hyphen and a letter glued to it
/// on both sides: inside a slug (`select-table_name` after a parenthesis
/// is a select; a slug's first word is `select_shape`'s to judge).
fn in_slug(s: &[u8], start: usize, end: usize) -> bool {
    let letter = |i: usize| s.get(i).is_some_and(u8::is_ascii_alphabetic);
    start >= 2
        && s[start - 1] == b'-'
        && letter(start - 2)
        && s.get(end) == Some(&b'-')
        && letter(end + 1)
}

/// Strong functions that are also English words, called only with the
/// parenthesis right after them.
fn prose_word(w: &[u8]) -> bool {
    matches!(
        w,
        b"version"
            | b"schema"
            | b"database"
            | b"char"
            | b"convert"
            | b"cast"
            | b"exp"
            | b"mid"
            | b"ord"
            | b"polygon"
            | b"hex"
    )
}

/// Functions an injection calls to delay, leak through errors, read
/// files or run commands; no search box types them followed by `(`.
fn strong_function(w: &[u8]) -> bool {
    matches!(
        w,
        b"sleep"
            | b"benchmark"
            | b"pg_sleep"
            | b"extractvalue"
            | b"updatexml"
            | b"load_file"
            | b"xp_cmdshell"
            | b"xp_dirtree"
            | b"xp_fileexist"
            | b"xp_regread"
            | b"sp_executesql"
            | b"sp_oacreate"
            | b"openrowset"
            | b"opendatasource"
            | b"get_host_address"
            | b"get_host_name"
            | b"receive_message"
            | b"randomblob"
            | b"group_concat"
            | b"concat_ws"
            | b"make_set"
            | b"elt"
            | b"exp"
            | b"geometrycollection"
            | b"multipoint"
            | b"polygon"
            | b"linestring"
            | b"multilinestring"
            | b"multipolygon"
            | b"gtid_subset"
            | b"json_keys"
            | b"name_const"
            | b"ctxsys"
            | b"drithsx"
            | b"utl_inaddr"
            | b"utl_http"
            | b"dbms_pipe"
            | b"dbms_lock"
            | b"dbms_utility"
            | b"sys_context"
            | b"is_srvrolemember"
            | b"db_name"
            | b"user_name"
            | b"system_user"
            | b"current_user"
            | b"session_user"
            | b"database"
            | b"version"
            | b"schema"
            | b"substring_index"
            | b"ord"
            | b"mid"
            | b"ascii"
            | b"unhex"
            | b"hex"
            | b"char"
            | b"chr"
            | b"nchar"
            | b"convert"
            | b"cast"
            | b"iif"
            | b"ifnull"
            | b"nullif"
            | b"coalesce"
            | b"isnull"
            | b"regexp_substring"
            | b"crypt_key"
            | b"generate_series"
            | b"pg_read_file"
            | b"pg_ls_dir"
            | b"lo_import"
            | b"sqlite_version"
            | b"load_extension"
    )
}

fn is_operand(k: K) -> bool {
    matches!(
        k,
        K::Str { .. }
            | K::Num
            | K::Word
            | K::Func(_)
            | K::Var { .. }
            | K::LParen
            | K::Not
            | K::Kw(W::Lit | W::Select | W::Case)
    )
}

/// `1=1`, `'a'='a'`: a comparison of two literals, true or false whatever
/// the row, which only a probe writes.
fn literal_cmp(t: &[Tok], i: usize) -> bool {
    let k = |j: usize| t.get(j).map(|t| t.k);
    let lit = |x: Option<K>| matches!(x, Some(K::Num | K::Str { .. } | K::Kw(W::Lit)));
    lit(k(i)) && matches!(k(i + 1), Some(K::Cmp)) && lit(k(i + 2))
}

fn text<'a>(s: &'a [u8], t: &Tok) -> &'a [u8] {
    s.get(t.start as usize..t.end as usize).unwrap_or(&[])
}

/// The shapes of an injection over one context's tokens.
fn shapes(t: &[Tok], s: &[u8], ctx: Ctx) -> bool {
    let k = |i: usize| t.get(i).map(|t| t.k);
    let n = t.len();
    let last_comment = matches!(k(n.wrapping_sub(1)), Some(K::Comment));
    // Shapes that hold wherever they occur.
    for i in 0..n {
        let prev = if i > 0 { k(i - 1) } else { None };
        match t[i].k {
            K::Kw(W::Union) => {
                let mut j = i + 1;
                while matches!(k(j), Some(K::Kw(W::AllDistinct) | K::LParen)) {
                    j += 1;
                }
                if matches!(k(j), Some(K::Kw(W::Select))) {
                    return true;
                }
                // `-1 union`, `1)#\nunion`: a union right after a value,
                // left open for the query's own select.
                if matches!(prev, Some(K::Num | K::RParen))
                    && matches!(k(i + 1), None | Some(K::Comment))
                {
                    return true;
                }
            }
            // `; or '1'='1'`: a value that ends a statement, then a test.
            K::Semi if i == 0 && k(1) == Some(K::Logic) && literal_test(t, s, 2) => return true,
            // `||utl_http.request(...)`, `dbms_pipe.receive_message(`:
            // Oracle's packages, called or among SQL; Oracle's own docs
            // name them in paths (`/arpls/UTL_HTTP.html`).
            K::Word
                if matches!(k(i + 1), Some(K::Dot))
                    && oracle_package(text(s, &t[i]))
                    && (matches!(k(i + 2), Some(K::Func(_)))
                        || matches!(
                            prev,
                            Some(K::Logic | K::Cmp | K::Comma | K::LParen | K::Kw(W::Select))
                        )) =>
            {
                return true
            }
            // `--sp_password`: SQL Server leaves a statement naming it out
            // of its trace log.
            K::Word
                if text(s, &t[i]) == b"sp_password"
                    && s[..t[i].start as usize].ends_with(b"--") =>
            {
                return true
            }
            K::Semi => {
                // `;if 1=1 drop ...`, `;while 1=1 shutdown`
                if t.get(i + 1)
                    .is_some_and(|x| matches!(text(s, x), b"if" | b"while"))
                    && literal_cmp(t, i + 2)
                {
                    return true;
                }
                if matches!(
                    k(i + 1),
                    Some(K::Kw(W::Select | W::Stmt | W::Waitfor | W::Declare) | K::Func(F::Strong))
                ) {
                    return true;
                }
            }
            // `char(` and friends are strong only in company: a call
            // beside an operator, a comparison or another call.
            K::Func(F::Strong) if strong_alone(t, i) => return true,
            K::Var { sys: true } if sys_var_shape(t, s, i) => return true,
            K::Kw(W::Select) if select_shape(t, s, i) => return true,
            K::Kw(W::Waitfor)
                if matches!(k(i + 1), Some(K::Word)) && matches!(k(i + 2), Some(K::Str { .. })) =>
            {
                return true
            }
            K::Kw(W::Exec) => {
                let next = t.get(i + 1);
                if matches!(next.map(|t| t.k), Some(K::Var { .. } | K::LParen))
                    || next.is_some_and(|x| {
                        let w = text(s, x);
                        w.starts_with(b"xp_") || w.starts_with(b"sp_") || w.starts_with(b"master")
                    })
                {
                    return true;
                }
            }
            K::Kw(W::Declare) if matches!(k(i + 1), Some(K::Var { .. })) => return true,
            K::Kw(W::Into) if matches!(k(i + 1), Some(K::Kw(W::File))) => return true,
            K::Kw(W::Procedure) if matches!(k(i + 1), Some(K::Func(_))) => return true,
            K::Kw(W::Case) if t[i + 1..].iter().take(4).any(|x| x.k == K::Kw(W::When)) => {
                return true
            }
            K::Kw(W::Where)
                if i > 0 && (literal_cmp(t, i + 1) || logic_rhs(t, i + 1) && last_comment) =>
            {
                return true
            }
            K::Kw(W::Order | W::Group) if matches!(k(i + 1), Some(K::Kw(W::By))) => {
                let value_before =
                    i == 0 || matches!(prev, Some(K::Num | K::RParen | K::Str { closed: true }));
                let by_num = matches!(k(i + 2), Some(K::Num | K::Func(_) | K::LParen));
                if value_before && (by_num || last_comment) {
                    return true;
                }
            }
            // `having 1=1` also opens a value that is appended to a query.
            K::Kw(W::Having)
                if i > 0 && (matches!(k(i + 1), Some(K::LParen)) || logic_rhs(t, i + 1))
                    || i == 0 && literal_cmp(t, 1) =>
            {
                return true
            }
            K::Logic if logic_shape(t, s, i, ctx) => return true,
            K::Kw(W::Stmt) if i == 0 && ctx == Ctx::Bare && statement(t, s) => return true,
            // `1=1 and ...`, `'a'='a'--`
            K::Num | K::Str { .. } | K::Kw(W::Lit)
                if literal_cmp(t, i) && matches!(k(i + 3), Some(K::Logic | K::Comment)) =>
            {
                return true
            }
            _ => {}
        }
    }
    match ctx {
        Ctx::Quote(_) => breakout(t, s),
        Ctx::Bare => {
            // `1--`, `1)/*`: a number then a comment cutting the query
            // (not `#`, which in prose numbers things: `size 10 #2`).
            // A run of three dashes or more is a separator (`ZIS-151---
            // korol`, `us_privacy=1---`), not the `--` that cuts a query.
            n >= 2
                && last_comment
                && !t[n - 1].hash
                && !text(s, &t[n - 1]).starts_with(b"---")
                && matches!(k(n - 2), Some(K::Num | K::RParen))
        }
    }
}

/// `@@version`, `@@global.datadir`: a server variable, or any `@@name`
/// among SQL (`1=@@x`, `(@@x)`); not a path's `/@@images/` (Plone).
fn sys_var_shape(t: &[Tok], s: &[u8], i: usize) -> bool {
    let at = t[i].start as usize;
    // `/@@images/`, `/plone/@@usergroup-userprefs`: Zope's views in a
    // path (not after a comment: `select/**/@@version`).
    if at > 0 && s[at - 1] == b'/' && !s[..at].ends_with(b"*/") {
        return false;
    }
    let name = text(s, &t[i]).get(2..).unwrap_or_default();
    let name = name
        .strip_prefix(b"global.")
        .or_else(|| name.strip_prefix(b"session."))
        .unwrap_or(name);
    const SERVER: &[&[u8]] = &[
        b"version",
        b"datadir",
        b"basedir",
        b"hostname",
        b"servername",
        b"servicename",
        b"tmpdir",
        b"spid",
        b"language",
        b"langid",
        b"identity",
        b"rowcount",
        b"error",
        b"port",
        b"sql_mode",
        b"secure_file_priv",
        b"plugin_dir",
        b"general_log",
        b"microsoftversion",
        b"connections",
        b"cpu_busy",
        b"dbts",
        b"lock_timeout",
        b"textsize",
        b"trancount",
        b"options",
        b"procid",
        b"remserver",
        b"nestlevel",
        b"warning_count",
        b"autocommit",
        b"pid_file",
        b"socket",
        b"server_id",
    ];
    const FAMILIES: &[&[u8]] = &[
        b"version_",
        b"innodb_",
        b"character_set_",
        b"collation_",
        b"have_",
        b"max_",
        b"log_",
    ];
    if SERVER.contains(&name) || FAMILIES.iter().any(|p| name.starts_with(p)) {
        return true;
    }
    let sql = |j: Option<usize>| {
        j.and_then(|j| t.get(j)).is_some_and(|x| {
            matches!(
                x.k,
                K::Cmp
                    | K::CmpWord
                    | K::Logic
                    | K::Not
                    | K::Comma
                    | K::LParen
                    | K::RParen
                    | K::Semi
                    | K::Comment
                    | K::Func(_)
                    | K::Kw(_)
            ) || x.k == K::Op && !matches!(text(s, x), b"/" | b"-")
        })
    };
    sql(i.checked_sub(1)) || sql(Some(i + 1))
}

/// A strong function call that fires on its own: the time, error and
/// file ones always; the string and metadata ones (`char`, `version`,
/// `database`...) next to an operator, comparison, comma chain, another
/// call or a comment, as in `char(65)||char(66)`, `1=version()`.
fn strong_alone(t: &[Tok], i: usize) -> bool {
    let k = |j: usize| t.get(j).map(|t| t.k);
    // The call's closing parenthesis (calls nest).
    let mut depth = 0i32;
    let mut end = i + 1;
    while end < t.len() {
        match t[end].k {
            K::LParen => depth += 1,
            K::RParen => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        end += 1;
    }
    if end >= t.len() && depth > 0 {
        // Unclosed: `sleep(` at the end of a value is still a probe
        // when something was inside.
        return end > i + 2;
    }
    let before = if i > 0 { k(i - 1) } else { None };
    let after = k(end + 1);
    let company = |x: Option<K>| {
        matches!(
            x,
            Some(
                K::Op
                    | K::Cmp
                    | K::CmpWord
                    | K::Logic
                    | K::Not
                    | K::Comma
                    | K::LParen
                    | K::Semi
                    | K::Comment
                    | K::Func(_)
                    | K::Str { .. }
            )
        )
    };
    // Nothing around but a call with an argument: `sleep(5)` alone.
    company(before) || company(after) || (before.is_none() && after.is_none() && end > i + 2)
}

/// `select` as in a query: `select *`, `select @@version`, `select 1,2`,
/// `(select ...)`, `select a, f(b) from t`, `select x from y` then the
/// end, a limit or a comment.
/// Token `j` is a `-` with a word right before and after it, no space
/// between: a hyphenated word (`select-fit`), where SQL's minus would
/// take a number or an expression.
fn hyphen_in_word(t: &[Tok], s: &[u8], j: usize) -> bool {
    let (Some(op), Some(before), Some(after)) = (
        t.get(j),
        j.checked_sub(1).and_then(|b| t.get(b)),
        t.get(j + 1),
    ) else {
        return false;
    };
    text(s, op) == b"-" && before.end == op.start && op.end == after.start && after.k == K::Word
}

fn select_shape(t: &[Tok], s: &[u8], i: usize) -> bool {
    let k = |j: usize| t.get(j).map(|t| t.k);
    let mut j = i + 1;
    while matches!(k(j), Some(K::Kw(W::AllDistinct) | K::Kw(W::Other))) {
        j += 1;
    }
    let paren_before = i > 0 && matches!(k(i - 1), Some(K::LParen));
    match k(j) {
        // `select-fit-jeans`, `how-to-select-a-plan`: a slug's hyphens
        // glued to words, not a minus.
        Some(K::Op) if hyphen_in_word(t, s, j) => false,
        Some(K::Op)
        | Some(K::Var { .. })
        | Some(K::Func(_))
        | Some(K::Kw(W::Case | W::Lit | W::Select))
        | Some(K::LParen) => true,
        Some(K::Num | K::Str { .. }) => {
            matches!(
                k(j + 1),
                Some(
                    K::Comma
                        | K::Kw(W::From | W::Into | W::Limit | W::Union | W::Where | W::Other)
                        | K::RParen
                        | K::Comment
                        | K::Semi
                        | K::Op
                        | K::Cmp
                )
            ) || paren_before
        }
        Some(K::Word) => {
            // A select list, then `from` and a table.
            let mut m = j;
            let mut structured = false;
            while let Some(x) = k(m) {
                match x {
                    K::Word | K::Dot => {}
                    K::Comma
                    | K::Func(_)
                    | K::LParen
                    | K::RParen
                    | K::Num
                    | K::Var { .. }
                    | K::Op => structured = true,
                    _ => break,
                }
                m += 1;
            }
            if matches!(k(m), Some(K::Kw(W::From))) {
                let mut e = m + 1;
                while matches!(k(e), Some(K::Word | K::Dot)) {
                    e += 1;
                }
                return e > m + 1
                    && (structured
                        || matches!(
                            k(e),
                            None | Some(
                                K::Kw(W::Limit | W::Order | W::Group | W::Union | W::Other)
                                    | K::Comment
                                    | K::Semi
                                    | K::RParen
                            )
                        )
                        || matches!(k(e), Some(K::Kw(W::Where))) && logic_rhs(t, e + 1));
            }
            paren_before && matches!(k(m), Some(K::RParen))
        }
        _ => false,
    }
}

/// After a logic operator: a boolean expression an attacker uses to test
/// the query (`1=1`, `'a'='a'`, `sleep(5)`, `(select ...)`, `@@version`).
fn logic_rhs(t: &[Tok], start: usize) -> bool {
    let mut saw_cmp = false;
    let mut saw_operand = false;
    let mut word_cmp = false;
    for tok in t.iter().skip(start).take(16) {
        match tok.k {
            K::Cmp => saw_cmp = true,
            // `is`, `in`, `like` compare words in prose too (`and is
            // available in a larger size`): only literals count after them.
            K::CmpWord => {
                saw_cmp = true;
                word_cmp = true;
            }
            K::Func(_) | K::Kw(W::Select) | K::Var { sys: true } => return true,
            // A user variable is an operand (`or@var.es` is an address).
            K::Str { .. } | K::Num | K::Kw(W::Lit) | K::Var { sys: false } => {
                if saw_cmp {
                    return true;
                }
                saw_operand = true;
            }
            K::Word => {
                if saw_cmp && saw_operand && !word_cmp {
                    return true;
                }
                saw_operand = true;
            }
            K::LParen | K::RParen | K::Op | K::Dot | K::Not => {}
            _ => break,
        }
    }
    false
}

/// `x or 1=1`, `1 and sleep(5)`, `) or (1=1`: a logic operator after an
/// operand with a boolean test behind it.
fn logic_shape(t: &[Tok], s: &[u8], i: usize, ctx: Ctx) -> bool {
    let k = |j: usize| t.get(j).map(|t| t.k);
    let mut p = i;
    while p > 0 && matches!(k(p - 1), Some(K::RParen)) {
        p -= 1;
    }
    if p == 0 {
        // Bare, a value may start with the operator, as `or 1=1--` does:
        // only with a literal test or a cut-off.
        return ctx == Ctx::Bare
            && (i == 0
                && (literal_cmp(t, i + 1) && matches!(k(i + 4), None | Some(K::Comment))
                // ` or 'a' = n'a'`, ` or 2 between 1 and 3`, ` or 'x' in ('x')`
                || literal_test(t, s, i + 1)
                // `or true--`, `or 1#`
                || matches!(k(i + 1), Some(K::Num | K::Kw(W::Lit)))
                    && matches!(k(i + 2), Some(K::Comment))
                    && t.len() == 3
                    || logic_rhs(t, i + 1) && matches!(t.last().map(|t| t.k), Some(K::Comment)))
                || identity_cmp(t, s, i + 1));
    }
    let left_ok = p < i
        || matches!(
            k(p - 1),
            Some(K::Num | K::Word | K::Var { .. } | K::Str { closed: true } | K::Kw(W::Lit))
        );
    if !left_ok {
        return false;
    }
    // In a quote context the leading string's own logic is `breakout`'s.
    if p == 1 && ctx != Ctx::Bare {
        return breakout(t, s);
    }
    logic_rhs(t, i + 1)
}

/// From token `j` to the end (or a final comment), a test of literals
/// only: `'a' = n'a'`, `'some'+'thing' = 'something'`, `2 between 1 and
/// 3`, `'x' in ('x', 'y')`. Nothing but an injection writes one.
fn literal_test(t: &[Tok], s: &[u8], j: usize) -> bool {
    let k = |i: usize| t.get(i).map(|t| t.k);
    let literal = |i: usize| matches!(k(i), Some(K::Str { .. } | K::Num));
    // A literal, `n'...'` (SQL Server's national string), or literals
    // joined by operators; returns the token after it.
    let operand = |mut i: usize| -> Option<usize> {
        if k(i) == Some(K::Word)
            && text(s, &t[i]) == b"n"
            && matches!(k(i + 1), Some(K::Str { .. }))
        {
            i += 1;
        }
        if !literal(i) {
            return None;
        }
        i += 1;
        while k(i) == Some(K::Op) && literal(i + 1) {
            i += 2;
        }
        Some(i)
    };
    let ends = |i: usize| matches!(k(i), None | Some(K::Comment));
    let Some(i) = operand(j) else {
        return false;
    };
    match k(i) {
        Some(K::Cmp) => operand(i + 1).is_some_and(ends),
        Some(K::CmpWord) if text(s, &t[i]) == b"between" => operand(i + 1).is_some_and(|p| {
            k(p) == Some(K::Logic) && text(s, &t[p]) == b"and" && operand(p + 1).is_some_and(ends)
        }),
        Some(K::CmpWord) if text(s, &t[i]) == b"in" && k(i + 1) == Some(K::LParen) => {
            let mut p = i + 2;
            loop {
                let Some(q) = operand(p) else {
                    return false;
                };
                match k(q) {
                    Some(K::Comma) => p = q + 1,
                    Some(K::RParen) => return ends(q + 1),
                    _ => return false,
                }
            }
        }
        _ => false,
    }
}

fn oracle_package(w: &[u8]) -> bool {
    w.starts_with(b"utl_") || w.starts_with(b"dbms_") || w == b"ctxsys" || w == b"ordsys"
}

/// A whole statement as the value, in its full syntax: `drop table x;`,
/// `insert into x values (...)`, `delete from x where ...`, `update x set
/// y=...`, `create table x (...)`, `alter table x add ...`. The words
/// alone (`drop table`, `update users`, `delete from cart`) are prose.
fn statement(t: &[Tok], s: &[u8]) -> bool {
    let k = |i: usize| t.get(i).map(|t| t.k);
    let word = |i: usize| t.get(i).map_or(&b""[..], |x| text(s, x));
    let name = |i: usize| matches!(k(i), Some(K::Word | K::Func(_)));
    let ends = |i: usize| matches!(k(i), None | Some(K::Semi | K::Comment));
    let object = |i: usize| {
        matches!(
            word(i),
            b"table"
                | b"database"
                | b"schema"
                | b"view"
                | b"procedure"
                | b"function"
                | b"index"
                | b"user"
                | b"login"
                | b"trigger"
        )
    };
    match word(0) {
        b"drop" | b"truncate" => object(1) && name(2) && ends(3) && t.len() > 3,
        b"insert" | b"replace" => {
            k(1) == Some(K::Kw(W::Into))
                && name(2)
                && (matches!(k(3), Some(K::LParen | K::Kw(W::Select))) || word(3) == b"values")
        }
        b"delete" => {
            k(1) == Some(K::Kw(W::From))
                && name(2)
                && (k(3) == Some(K::Kw(W::Where)) && logic_rhs(t, 4) || ends(3) && t.len() > 3)
        }
        b"update" => {
            name(1)
                && k(2) == Some(K::Kw(W::Stmt))
                && word(2) == b"set"
                && name(3)
                && word(4) == b"="
        }
        b"create" => object(1) && name(2) && matches!(k(3), Some(K::LParen | K::Kw(W::Other))),
        b"alter" => {
            object(1)
                && name(2)
                && matches!(
                    word(3),
                    b"add" | b"drop" | b"modify" | b"rename" | b"alter" | b"change"
                )
        }
        _ => false,
    }
}

/// `x=x`, `('a'='a`, `(1=1)`: one operand compared equal to itself (the
/// closing quote may be the query's own), true whatever the row; then
/// the end, a comment, a parenthesis or more logic. A probe's tautology
/// when a value starts with a logic operator (`or a=a`).
fn identity_cmp(t: &[Tok], s: &[u8], mut j: usize) -> bool {
    let k = |i: usize| t.get(i).map(|t| t.k);
    while matches!(k(j), Some(K::LParen)) {
        j += 1;
    }
    let operand = |x: Option<K>| matches!(x, Some(K::Word | K::Num | K::Str { .. }));
    if !(operand(k(j)) && k(j + 1) == Some(K::Cmp) && operand(k(j + 2))) {
        return false;
    }
    let bare = |tok: &Tok| {
        let b = text(s, tok);
        let b = b
            .strip_prefix(b"'")
            .or_else(|| b.strip_prefix(b"\""))
            .unwrap_or(b);
        b.strip_suffix(b"'")
            .or_else(|| b.strip_suffix(b"\""))
            .unwrap_or(b)
    };
    let left = bare(&t[j]);
    text(s, &t[j + 1]) == b"="
        && !left.is_empty()
        && left == bare(&t[j + 2])
        && matches!(
            k(j + 3),
            None | Some(K::Comment | K::RParen | K::Logic | K::Semi)
        )
}

/// `aa' + 'b`, `1'*null or '1`, `x' rlike '0`, `aa'/current_date in (0)
/// --`: a token-like string left behind, an operator, and either the
/// query's own closing quote taken over by a token-like string or a
/// comment. The string left behind and the one picked up carry no
/// spaces: quoted phrases in prose (`"rock" + "roll"`, `16" or 18"`)
/// do not fire.
fn short_breakout(t: &[Tok], s: &[u8], j: usize) -> bool {
    let k = |i: usize| t.get(i).map(|t| t.k);
    if !matches!(k(j), Some(K::Op | K::Cmp | K::CmpWord | K::Logic | K::Not)) || t.len() > 16 {
        return false;
    }
    let no_space = |b: &[u8]| {
        !b.iter()
            .any(|c| c.is_ascii_whitespace() || *c == b'+' || *c == 0)
    };
    let lead = text(s, &t[0]);
    // A token's worth: the payload's own prefix, not a sentence or URL.
    if !no_space(lead) || lead.len() > 24 {
        return false;
    }
    let Some(last) = t.last() else { return false };
    match last.k {
        K::Comment => t.len() > j + 1 && !last.hash,
        K::Str { closed: false } => {
            // The tail is the query's own quote taken over: the same quote
            // as the context's, and a short literal; empty only when the
            // value itself starts with the quote (`'-'`, `"*"`).
            let body = text(s, last);
            let same_quote = body.first() == lead.last();
            if lead.len() == 1 && body.len() == 1 {
                // `'-'`, `'^'`, `"&"`: MySQL's auth-bypass arithmetic on two
                // empty strings; not `"*"`, a wildcard search.
                let simple = t[j..t.len() - 1].iter().all(|x| {
                    matches!(
                        x.k,
                        K::Op | K::Logic | K::Cmp | K::CmpWord | K::Not | K::Str { .. } | K::Num
                    )
                });
                return same_quote
                    && simple
                    && t.len() <= 8
                    && (t.len() > j + 2 || matches!(text(s, &t[j]), b"-" | b"^" | b"&" | b"|"));
            }
            body.len() >= 2 && body.len() <= 9 && no_space(body) && same_quote
        }
        _ => false,
    }
}

/// Leaving a quoted string (the first token of a quote context) and
/// continuing with SQL.
fn breakout(t: &[Tok], s: &[u8]) -> bool {
    let k = |j: usize| t.get(j).map(|t| t.k);
    let last_comment = matches!(t.last().map(|t| t.k), Some(K::Comment));
    let mut j = 1;
    while matches!(k(j), Some(K::RParen)) {
        j += 1;
    }
    if short_breakout(t, s, j) {
        return true;
    }
    match k(j) {
        // `admin'--`, `')#`; a `#` only with nothing after it and a
        // token-like string before (`"#2 MOM"`, `soap 1 '#` are prose).
        Some(K::Comment) if !t[j].hash => true,
        Some(K::Comment) => {
            let lead = text(s, &t[0]);
            let body = text(s, &t[j]).get(1..).unwrap_or(&[]);
            !lead.iter().any(|c| c.is_ascii_whitespace() || *c == b'+')
                && !body.iter().any(u8::is_ascii_alphanumeric)
        }
        // `' or 'a'='a`, `' and 1=1`, `1' and '1`
        Some(K::Logic) => {
            if logic_rhs(t, j + 1) || last_comment && k(j + 1).is_some_and(is_operand) {
                return true;
            }
            match k(j + 1) {
                Some(K::Kw(W::Lit)) | Some(K::Not) => true,
                // `1' and '1`: a bare string operand, when the string left
                // behind is a token, not a phrase (`"rock" and "roll`).
                Some(K::Str { .. }) => {
                    t.len() == j + 2 && !text(s, &t[0]).iter().any(|c| c.is_ascii_whitespace())
                }
                _ => false,
            }
        }
        // `';--`, `'; drop table x`
        Some(K::Semi) => matches!(
            k(j + 1),
            Some(
                K::Comment
                    | K::Func(_)
                    | K::Kw(W::Select | W::Stmt | W::Exec | W::Declare | W::Waitfor)
            )
        ),
        // `'+(select 1)+'`, `'||pg_sleep(5)||'`, `'-sleep(5)-'`, `'-1--`
        Some(K::Op) => match k(j + 1) {
            Some(K::LParen | K::Func(_) | K::Kw(W::Select)) => true,
            Some(K::Str { .. } | K::Num) => matches!(k(j + 2), Some(K::Comment)),
            _ => false,
        },
        // `'='`, `1'='1`, `' = 'x' or`
        Some(K::Cmp) => match k(j + 1) {
            Some(K::LParen | K::Func(_) | K::Kw(W::Select | W::Lit)) => true,
            Some(K::Str { .. } | K::Num) => matches!(
                k(j + 2),
                None | Some(K::Comment | K::Logic | K::RParen | K::Semi | K::Op | K::Cmp)
            ),
            Some(K::Word) => matches!(k(j + 2), None | Some(K::Comment)),
            _ => false,
        },
        // `' in (select`, `' like (`: words compare only with SQL behind.
        Some(K::CmpWord) => matches!(k(j + 1), Some(K::LParen | K::Func(_) | K::Kw(W::Select))),
        // `' order by 1`, `' having 1=1`, `' into outfile`, `' waitfor
        // delay ...`, `' procedure analyse(`, `' limit 1--`
        Some(K::Kw(W::Order | W::Group)) => matches!(k(j + 1), Some(K::Kw(W::By))),
        Some(K::Kw(W::Into)) => matches!(k(j + 1), Some(K::Kw(W::File) | K::Var { .. })),
        Some(K::Kw(W::Having | W::Waitfor | W::Procedure)) => true,
        Some(K::Kw(W::Limit)) => matches!(k(j + 1), Some(K::Num)),
        Some(K::Kw(W::Where)) => logic_rhs(t, j + 1),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqli(s: &str) -> bool {
        Sqli::default().detect(s.to_ascii_lowercase().as_bytes())
    }

    #[test]
    fn injections() {
        for p in [
            "1 union all select null,null--",
            "1/*!50000union*/ select 1,2",
            "1' or '1'='1",
            "' or ''='",
            "admin'--",
            "admin')#",
            "1' and 1=1",
            "1 and 1=1",
            "1) or (1=1",
            "1 and sleep(5)",
            "1;drop table users",
            "'; exec master..xp_cmdshell 'dir'--",
            "1' waitfor delay '0:0:5'--",
            "' order by 3--",
            "1 order by 3",
            "(select 1 from dual)",
            "select * from users",
            "1'+(select 1)+'",
            "' || pg_sleep(5) || '",
            "1 or benchmark(1000000,md5(1))",
            "char(65)+char(66)",
            "1' and extractvalue(1,concat(0x5c,version()))--",
            "\" or \"a\"=\"a",
            "or 1=1--",
            "1' into outfile '/tmp/x'",
            "-1 or 3*2>1",
            "@@version",
            "1);declare @x int",
            "' having 1=1--",
            "1'='1",
            "or x=x",
            " OR a = a",
            ")%20or%20('x'='x",
            ") or (a=a",
            "having 1=1",
            "drop table users;",
            "drop table users--",
            "insert into users values (1,'a')",
            "insert into users (name) values ('x')",
            "delete from users where 1=1",
            "delete from users;",
            "update users set pass='x'",
            "create table myfile (input text);",
            "alter table users add x int",
            "truncate table logs;",
            // A minus after select still is one.
            "(select-1)",
            "1 and (select-sleep(5))",
        ] {
            assert!(sqli(p), "missed {p:?}");
        }
    }

    #[test]
    fn benign() {
        for b in [
            "O'Brien",
            "rock and roll",
            "select a union representative",
            // Slugs: hyphens glued to words are not minus signs.
            "/product/select-fit-jeans",
            "/blog/select-your-size",
            "/select-a-plan",
            "/docs/how-to-select-a-union",
            "select-fit",
            "Y'ALL COME BACK NOW",
            "don't or won't",
            "between 1 and 10",
            "1 or 2 people",
            "yes or no",
            "and/or",
            "it's a wonderful life",
            "mother's day",
            "3 BY 5 RECIPE CARDS",
            "order by date",
            "2--3 days",
            "a--b",
            "#1 best seller",
            "select from our menu",
            "1950's dresses",
            "\"exact phrase\"",
            "drop shipping",
            "MATS 5\" BY 7\"",
            "I'M AFRAID SO. YOU'RE ENTIRELY BONKERS. BUT I'LL TELL YOU A SECRET",
            "{\"id\":1,\"name\":\"x\"}",
            "1,2,3",
            "sleep apnea",
            "char array",
            "or x=y",
            "or color=red",
            "having fun",
            "drop table",
            "drop table oak",
            "delete from cart",
            "update users",
            "update your settings",
            "create table of contents",
            "insert into slot b",
        ] {
            assert!(!sqli(b), "false positive {b:?}");
        }
    }
}
