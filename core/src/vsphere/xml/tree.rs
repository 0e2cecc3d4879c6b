//! The element tree of one SOAP answer: quick-xml's streaming reader
//! turns the answer into local names, `xsi:type`, `type` and text, bounded
//! in depth, element count and text ([`Limits`], sized by the caller per
//! call) so that a hostile or broken server cannot exhaust memory; nothing
//! past a bound is read or kept. Nothing here panics on any input (see the
//! fuzz target). A decoder may take some elements as they are read
//! instead ([`Stream`], [`parse_with`]): the tree then keeps only the rest.

use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// Bounds of one parsed document. The tree's memory is at most about
/// `nodes × (size_of::<Element>() + 64)` plus `text` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most elements.
    pub nodes: usize,
    /// Most bytes of element names, attribute values and text together.
    pub text: usize,
}

/// One XML element.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Element {
    /// Local name (namespace prefix removed).
    pub name: String,
    /// `xsi:type` without prefix, if present.
    pub xsi_type: Option<String>,
    /// `type` attribute (managed object references), if present.
    pub mo_type: Option<String>,
    /// Concatenated text content directly inside this element.
    pub text: String,
    /// Child elements in order.
    pub children: Vec<Element>,
}

impl Element {
    /// First child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children with this local name.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Follows a path of child names.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |n, name| n.child(name))
    }

    /// Trimmed text of a child.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// Why a response could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed, or too deep.
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// Larger than the call's [`Limits`] (or the body's size cap, reported
    /// by the reader as an I/O error of kind `FileTooLarge`).
    #[error("answer too large: {0}")]
    TooLarge(String),
    /// Reading the answer failed (connection lost, timed out).
    #[error("reading the answer failed: {1}")]
    Read(std::io::ErrorKind, String),
    /// Well-formed but not the expected shape.
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

fn bad(e: &dyn std::fmt::Display) -> XmlError {
    XmlError::Malformed(e.to_string())
}

/// A local name: the part after the namespace prefix.
fn local(name: &[u8]) -> std::borrow::Cow<'_, str> {
    let n = match name.iter().rposition(|&c| c == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    String::from_utf8_lossy(n)
}

/// A decoder that takes some elements of an answer, with everything
/// inside them, as they are read, instead of the tree keeping them: an
/// answer of thousands of records then builds no tree of them. It sees
/// local names and text unescaped, within the same [`Limits`], depth and
/// well-formedness checks as the tree.
pub trait Stream {
    /// Whether the element `name`, inside the open elements `path` (the
    /// root first, never empty: the root is always the tree's), is taken
    /// with its subtree.
    fn claims(&self, path: &[Element], name: &str) -> bool;
    /// A start tag inside a taken element, or the taken element itself
    /// (its attributes are decoded and counted as the tree's, not passed
    /// on).
    fn open(&mut self, name: &str) -> Result<(), XmlError>;
    /// Text directly inside the innermost open element (it may come in
    /// several pieces).
    fn text(&mut self, text: &str) -> Result<(), XmlError>;
    /// The end of the innermost open element.
    fn close(&mut self) -> Result<(), XmlError>;
}

/// The stream that takes nothing: the whole answer is a tree.
pub struct NoStream;

impl Stream for NoStream {
    fn claims(&self, _: &[Element], _: &str) -> bool {
        false
    }
    fn open(&mut self, _: &str) -> Result<(), XmlError> {
        Ok(())
    }
    fn text(&mut self, _: &str) -> Result<(), XmlError> {
        Ok(())
    }
    fn close(&mut self) -> Result<(), XmlError> {
        Ok(())
    }
}

/// Bounds large enough for any test document (16 MB of text, 1,000,000
/// elements).
pub(super) const IN_MEMORY: Limits = Limits {
    nodes: 1_000_000,
    text: 16 << 20,
};

/// Parses a document (in memory) into its root element, within
/// [`IN_MEMORY`].
pub fn parse(input: &[u8]) -> Result<Element, XmlError> {
    parse_from(input, IN_MEMORY)
}

/// Parses a document read from `input` into its root element, stopping
/// with an error as soon as it exceeds `limits` (nothing past that point
/// is read or kept).
pub fn parse_from(input: impl BufRead, limits: Limits) -> Result<Element, XmlError> {
    parse_with(input, limits, &mut NoStream)
}

/// Parses a document read from `input` as [`parse_from`] does, but the
/// elements `stream` claims go to it as they are read, and the tree
/// returned holds the rest.
pub fn parse_with(
    input: impl BufRead,
    limits: Limits,
    stream: &mut dyn Stream,
) -> Result<Element, XmlError> {
    let mut reader = Reader::from_reader(input);
    reader.config_mut().trim_text(false);
    let mut tree = Builder::new(limits, stream);
    let mut buf = Vec::new();
    loop {
        // matched in place: moving the event out through `?` costs a
        // stall per event
        match reader.read_event_into(&mut buf) {
            Err(e) => return Err(read_error(e)),
            Ok(Event::Start(e)) => tree.open(&e, &reader, false)?,
            Ok(Event::Empty(e)) => tree.open(&e, &reader, true)?,
            Ok(Event::End(_)) => tree.close()?,
            Ok(Event::Text(t)) => {
                if tree.in_element() {
                    let s = t.decode().map_err(|e| bad(&e))?;
                    tree.text(&quick_xml::escape::unescape(&s).map_err(|e| bad(&e))?)?;
                } else if !t.iter().all(|c| c.is_ascii_whitespace()) {
                    return Err(XmlError::Malformed("text outside the root element".into()));
                }
            }
            Ok(Event::CData(t)) => {
                tree.spend(t.len())?;
                tree.push_text(&String::from_utf8_lossy(&t))?;
            }
            Ok(Event::GeneralRef(r)) if tree.in_element() => {
                let name = String::from_utf8_lossy(&r).into_owned();
                let reference = format!("&{name};");
                let s = quick_xml::escape::unescape(&reference).map_err(|e| bad(&e))?;
                tree.text(&s)?;
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
        }
        buf.clear();
    }
    tree.finish()
}

/// What a reader's error means: the body's cap, the connection, or the
/// document.
fn read_error(e: quick_xml::Error) -> XmlError {
    match &e {
        quick_xml::Error::Io(io) if io.kind() == std::io::ErrorKind::FileTooLarge => {
            XmlError::TooLarge(io.to_string())
        }
        quick_xml::Error::Io(io) => XmlError::Read(io.kind(), io.to_string()),
        _ => bad(&e),
    }
}

/// The tree as it is read: the open elements, the root once closed, what
/// was spent of the limits, and the stream that takes the elements it
/// claims.
struct Builder<'s> {
    stack: Vec<Element>,
    root: Option<Element>,
    elements: usize,
    text: usize,
    limits: Limits,
    stream: &'s mut dyn Stream,
    /// How deep inside an element `stream` took (0: not inside one).
    streamed: usize,
}

impl<'s> Builder<'s> {
    fn new(limits: Limits, stream: &'s mut dyn Stream) -> Builder<'s> {
        Builder {
            stack: Vec::new(),
            root: None,
            elements: 0,
            text: 0,
            limits,
            stream,
            streamed: 0,
        }
    }

    fn too_large(&self) -> XmlError {
        XmlError::TooLarge(format!(
            "more than {} elements or {} KB of text",
            self.limits.nodes,
            self.limits.text / 1024
        ))
    }

    /// Spends `n` bytes of the text limit.
    fn spend(&mut self, n: usize) -> Result<(), XmlError> {
        self.text += n;
        if self.text > self.limits.text {
            return Err(self.too_large());
        }
        Ok(())
    }

    fn in_element(&self) -> bool {
        !self.stack.is_empty() || self.streamed > 0
    }

    /// A start tag (`empty`: one that closes itself).
    fn open<R>(
        &mut self,
        e: &BytesStart<'_>,
        reader: &Reader<R>,
        empty: bool,
    ) -> Result<(), XmlError> {
        self.elements += 1;
        if self.elements > self.limits.nodes {
            return Err(self.too_large());
        }
        self.spend(e.name().as_ref().len())?;
        if self.stack.len() + self.streamed >= MAX_DEPTH {
            return Err(XmlError::Malformed("document too deep".into()));
        }
        if self.root.is_some() {
            return Err(XmlError::Malformed("content after the root element".into()));
        }
        let qname = e.name();
        let name = local(qname.as_ref());
        // the root is always the tree's
        let streamed =
            self.streamed > 0 || (!self.stack.is_empty() && self.stream.claims(&self.stack, &name));
        let mut xsi_type = None;
        let mut mo_type = None;
        for a in e.attributes() {
            let a = a.map_err(|e| bad(&e))?;
            // every value decoded, so that a bad one refuses the answer
            let val = a
                .decode_and_unescape_value(reader.decoder())
                .map_err(|e| bad(&e))?;
            self.spend(val.len())?;
            let key = a.key.as_ref();
            if streamed {
                continue;
            }
            if key.ends_with(b":type") {
                xsi_type = Some(local(val.as_bytes()).into_owned());
            } else if key == b"type" {
                mo_type = Some(val.into_owned());
            }
        }
        if streamed {
            self.streamed += 1;
            self.stream.open(&name)?;
            return if empty { self.close() } else { Ok(()) };
        }
        let node = Element {
            name: name.into_owned(),
            xsi_type,
            mo_type,
            ..Element::default()
        };
        if empty {
            self.attach(node);
        } else {
            self.stack.push(node);
        }
        Ok(())
    }

    /// An end tag.
    fn close(&mut self) -> Result<(), XmlError> {
        if self.streamed > 0 {
            self.streamed -= 1;
            return self.stream.close();
        }
        let node = self
            .stack
            .pop()
            .ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
        self.attach(node);
        Ok(())
    }

    /// A finished element goes to its parent, or is the root.
    fn attach(&mut self, node: Element) {
        match self.stack.last_mut() {
            Some(parent) => parent.children.push(node),
            None => self.root = Some(node),
        }
    }

    /// Text inside the open element, spent from the limit.
    fn text(&mut self, s: &str) -> Result<(), XmlError> {
        self.spend(s.len())?;
        self.push_text(s)
    }

    /// Text added to the open element (none outside: dropped).
    fn push_text(&mut self, s: &str) -> Result<(), XmlError> {
        if self.streamed > 0 {
            return self.stream.text(s);
        }
        if let Some(top) = self.stack.last_mut() {
            top.text.push_str(s);
        }
        Ok(())
    }

    fn finish(self) -> Result<Element, XmlError> {
        if self.in_element() {
            return Err(XmlError::Malformed("unexpected end of document".into()));
        }
        self.root
            .ok_or_else(|| XmlError::Malformed("empty document".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_inputs() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "text",
            "<a/><b/>",
            "<a x='1' x='2'/>",
            "<a>&bogus;</a>",
            "<a x='&bogus;'/>",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
