//! What `dwepc-check --conf` reads of an nginx configuration: the
//! `dwepc_vsphere` endpoints, and each `upstream {}` that says `dwepc`
//! with its servers and `dwepc_node` lines. nginx's syntax (words,
//! quotes, `;`, blocks, `#` comments) and its `include` (globs, relative
//! to the main file's folder, as nginx resolves them under its prefix's
//! `conf/`); everything else is skipped. The directives' own words are
//! checked by the module's parsers (`dwepc_core::conf`), so this says
//! what `nginx -t` would say about them.

use std::path::{Path, PathBuf};

/// One directive: its words (name first), where it was written, and its
/// block's directives.
#[derive(Clone, Debug, PartialEq)]
pub struct Directive {
    pub words: Vec<String>,
    /// `file:line`.
    pub at: String,
    pub block: Vec<Directive>,
}

/// A `dwepc` upstream as the check needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    pub name: String,
    /// The `dwepc` directive's words (after the name).
    pub dwepc: Vec<String>,
    /// Each `server`'s address.
    pub servers: Vec<String>,
    /// Each `dwepc_node`'s words (after the name).
    pub nodes: Vec<Vec<String>>,
    pub at: String,
}

/// What the check reads of a configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Found {
    /// Each `dwepc_vsphere`'s words (after the name) and where.
    pub endpoints: Vec<(Vec<String>, String)>,
    /// Each `dwepc_prometheus`'s words (after the name) and where.
    pub prometheus: Vec<(Vec<String>, String)>,
    pub upstreams: Vec<Upstream>,
}

/// Most files an `include` chain may read (a loop of includes stops
/// here).
const MAX_FILES: usize = 256;

/// Reads `path` and its includes.
pub fn read(path: &Path) -> Result<Found, String> {
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut files = 0;
    let tree = parse_file(path, &base, &mut files)?;
    let mut found = Found::default();
    collect(&tree, &mut found);
    Ok(found)
}

fn parse_file(path: &Path, base: &Path, files: &mut usize) -> Result<Vec<Directive>, String> {
    *files += 1;
    if *files > MAX_FILES {
        return Err(format!("more than {MAX_FILES} files included (a loop?)"));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let tokens = tokenize(&text, &path.display().to_string())?;
    let mut pos = 0;
    let list = block(&tokens, &mut pos, false)?;
    expand_includes(list, base, files)
}

/// Replaces each `include` by the directives of the files it names.
fn expand_includes(
    list: Vec<Directive>,
    base: &Path,
    files: &mut usize,
) -> Result<Vec<Directive>, String> {
    let mut out = Vec::new();
    for mut d in list {
        if d.words[0] == "include" && d.words.len() == 2 {
            for f in glob(base, &d.words[1])? {
                out.extend(parse_file(&f, base, files)?);
            }
            continue;
        }
        d.block = expand_includes(std::mem::take(&mut d.block), base, files)?;
        out.push(d);
    }
    Ok(out)
}

/// The files `pattern` names (relative to `base`), `*` and `?` in its
/// last part, sorted as nginx sorts them.
fn glob(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = base.join(pattern);
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![full]);
    }
    let dir = full.parent().unwrap_or(base);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// `*` and `?` matching, as a shell's glob of one path part.
fn wildcard(p: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (p.chars().collect(), s.chars().collect());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < s.len() {
        if i < p.len() && (p[i] == '?' || p[i] == s[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(k) = star {
            i = k + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String, String),
    Semicolon,
    Open,
    Close(String),
}

/// nginx's tokens, as `ngx_conf_read_token` reads them: words, `;`,
/// `{`, `}`; `#` to the end of the line is a comment. A word ends at a
/// space, `;` or `{` (not at `}`); `{` right after `$` belongs to it
/// (`${var}`); `"…"` and `'…'` are words with spaces; `\` keeps the next
/// character in the word, and [`unescape`] then applies nginx's escapes.
fn tokenize(text: &str, file: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let at = format!("{file}:{line}");
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            ';' => out.push(Token::Semicolon),
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close(at)),
            '"' | '\'' => {
                let mut raw = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(format!("unexpected end of file in a quoted word at {at}"))
                        }
                        Some('\\') => {
                            raw.push('\\');
                            if let Some(e) = chars.next() {
                                line += usize::from(e == '\n');
                                raw.push(e);
                            }
                        }
                        Some(q) if q == c => break,
                        Some(ch) => {
                            line += usize::from(ch == '\n');
                            raw.push(ch);
                        }
                    }
                }
                out.push(Token::Word(unescape(&raw), at));
            }
            _ => {
                let mut raw = String::from(c);
                let mut variable = c == '$';
                if c == '\\' {
                    if let Some(e) = chars.next() {
                        line += usize::from(e == '\n');
                        raw.push(e);
                    }
                }
                while let Some(&n) = chars.peek() {
                    if n == '{' && variable {
                        raw.push(n);
                        chars.next();
                        continue;
                    }
                    if n.is_whitespace() || n == ';' || n == '{' {
                        break;
                    }
                    variable = n == '$';
                    raw.push(n);
                    chars.next();
                    if n == '\\' {
                        if let Some(e) = chars.next() {
                            line += usize::from(e == '\n');
                            raw.push(e);
                        }
                    }
                }
                out.push(Token::Word(unescape(&raw), at));
            }
        }
    }
    Ok(out)
}

/// nginx's escapes in a word: `\"`, `\'` and `\\` stand for the
/// character, `\t`, `\r`, `\n` for tab, CR and LF; any other `\` stays.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek().copied() {
                Some(e @ ('"' | '\'' | '\\')) => {
                    out.push(e);
                    chars.next();
                    continue;
                }
                Some(e @ ('t' | 'r' | 'n')) => {
                    out.push(match e {
                        't' => '\t',
                        'r' => '\r',
                        _ => '\n',
                    });
                    chars.next();
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

/// The directives up to the end of a block (`inner`) or of the file.
fn block(tokens: &[Token], pos: &mut usize, inner: bool) -> Result<Vec<Directive>, String> {
    let mut list = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut at = String::new();
    while let Some(t) = tokens.get(*pos) {
        *pos += 1;
        match t {
            Token::Word(w, a) => {
                if words.is_empty() {
                    at = a.clone();
                }
                words.push(w.clone());
            }
            Token::Semicolon if !words.is_empty() => list.push(Directive {
                words: std::mem::take(&mut words),
                at: at.clone(),
                block: Vec::new(),
            }),
            Token::Open if !words.is_empty() => {
                let inside = block(tokens, pos, true)?;
                list.push(Directive {
                    words: std::mem::take(&mut words),
                    at: at.clone(),
                    block: inside,
                });
            }
            Token::Close(_) if inner && words.is_empty() => return Ok(list),
            Token::Close(a) => return Err(format!("unexpected \"}}\" at {a}")),
            _ => return Err(format!("unexpected \";\" or \"{{\" after {at}")),
        }
    }
    if inner || !words.is_empty() {
        return Err(format!(
            "unexpected end of file, expecting \"}}\" or \";\" after {at}"
        ));
    }
    Ok(list)
}

/// The endpoints and dwepc upstreams of a parsed configuration (in any
/// block: the http block, or the directives themselves in a file that
/// holds only them).
fn collect(list: &[Directive], found: &mut Found) {
    for d in list {
        let rest = || d.words[1..].to_vec();
        match d.words[0].as_str() {
            "dwepc_vsphere" => found.endpoints.push((rest(), d.at.clone())),
            "dwepc_prometheus" => found.prometheus.push((rest(), d.at.clone())),
            "upstream" if d.words.len() == 2 => {
                let dwepc = d.block.iter().find(|x| x.words[0] == "dwepc");
                if let Some(dw) = dwepc {
                    found.upstreams.push(Upstream {
                        name: d.words[1].clone(),
                        dwepc: dw.words[1..].to_vec(),
                        servers: d
                            .block
                            .iter()
                            .filter(|x| x.words[0] == "server" && x.words.len() > 1)
                            .map(|x| x.words[1].clone())
                            .collect(),
                        nodes: d
                            .block
                            .iter()
                            .filter(|x| x.words[0] == "dwepc_node")
                            .map(|x| x.words[1..].to_vec())
                            .collect(),
                        at: d.at.clone(),
                    });
                }
            }
            _ => collect(&d.block, found),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_endpoints_and_dwepc_upstreams_through_includes() {
        let dir = std::env::temp_dir().join(format!("dwepc-check-conf-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(
            dir.join("nginx.conf"),
            "events {}\nhttp {\n  # a comment; { }\n  dwepc_vsphere vc url=https://vc/sdk \"user=a b\" password_file=/p;\n  include conf.d/*.conf;\n}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("conf.d/app.conf"),
            "upstream app {\n dwepc mode=shares;\n server 10.0.0.1:80 weight=2;\n server web2:80;\n dwepc_node web2:80 vm=web-2;\n}\nupstream plain { server 10.0.0.9; }\nserver { location / { proxy_pass http://app; } }\n",
        )
        .unwrap();
        std::fs::write(dir.join("conf.d/skip.txt"), "broken {").unwrap();
        let f = read(&dir.join("nginx.conf")).unwrap();
        assert_eq!(f.endpoints.len(), 1);
        assert_eq!(f.endpoints[0].0[2], "user=a b");
        assert!(f.endpoints[0].1.ends_with("nginx.conf:4"), "{f:?}");
        assert_eq!(f.upstreams.len(), 1);
        let u = &f.upstreams[0];
        assert_eq!(u.name, "app");
        assert_eq!(u.dwepc, ["mode=shares"]);
        assert_eq!(u.servers, ["10.0.0.1:80", "web2:80"]);
        assert_eq!(u.nodes, [vec!["web2:80".to_string(), "vm=web-2".into()]]);
        assert!(u.at.ends_with("app.conf:1"), "{u:?}");
        std::fs::write(dir.join("conf.d/bad.conf"), "upstream x {\n server a;\n").unwrap();
        let e = read(&dir.join("nginx.conf")).unwrap_err();
        assert!(e.contains("unexpected end of file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn words_are_read_as_nginx_reads_them() {
        let words = |t: &str| -> Vec<String> {
            tokenize(t, "f")
                .unwrap()
                .into_iter()
                .filter_map(|t| match t {
                    Token::Word(w, _) => Some(w),
                    _ => None,
                })
                .collect()
        };
        // ${var} is one word; } does not end a word
        assert_eq!(words("set $a ${host}x;"), ["set", "$a", "${host}x"]);
        assert_eq!(words("a}b;"), ["a}b"]);
        // nginx's escapes, quoted or not; other backslashes stay
        assert_eq!(
            words(r#""user=CORP\svc" u=CORP\\svc 'q=a\"b' user="x";"#),
            [r"user=CORP\svc", r"u=CORP\svc", "q=a\"b", "user=\"x\""]
        );
        // a backslash keeps `;` in the word, and stays (not an escape)
        assert_eq!(words(r"x\;y z;"), [r"x\;y", "z"]);
        assert_eq!(words("'a b' \"c\td\";"), ["a b", "c\td"]);
    }

    #[test]
    fn wildcards_match_as_a_shell_does() {
        assert!(wildcard("*.conf", "app.conf"));
        assert!(!wildcard("*.conf", "app.conf.bak"));
        assert!(wildcard("a?c*", "abcdef"));
        assert!(!wildcard("a?c", "ac"));
    }
}
