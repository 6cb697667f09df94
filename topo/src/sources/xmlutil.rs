//! A small XML tree built with quick-xml, shared by the hwloc and NCCL readers, and a
//! writer helper. Every element remembers its byte offset so errors can name a line.

use crate::error::TopoError;
use quick_xml::events::Event;
use quick_xml::Reader;

/// One element: name, attributes, children and concatenated text.
#[derive(Debug, Clone)]
pub struct Elem {
    /// Tag name.
    pub name: String,
    /// Attributes in document order.
    pub attrs: Vec<(String, String)>,
    /// Child elements.
    pub children: Vec<Elem>,
    /// Text content (trimmed pieces joined by one space).
    pub text: String,
    /// Byte offset of the `<` that opens the element.
    pub offset: usize,
}

impl Elem {
    /// The value of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Context for errors: the file name and the raw bytes.
pub struct Ctx<'a> {
    /// File name as the user gave it.
    pub file: &'a str,
    /// The whole input.
    pub data: &'a [u8],
}

impl Ctx<'_> {
    /// An error located at element `e`.
    pub fn err(&self, e: &Elem, msg: impl Into<String>) -> TopoError {
        TopoError::at_offset(self.file, self.data, e.offset, msg)
    }

    /// A required attribute.
    pub fn req<'e>(&self, e: &'e Elem, name: &str) -> Result<&'e str, TopoError> {
        e.attr(name)
            .ok_or_else(|| self.err(e, format!("<{}> lacks attribute {name:?}", e.name)))
    }

    /// An optional attribute parsed as a decimal number.
    pub fn num<T: std::str::FromStr>(&self, e: &Elem, name: &str) -> Result<Option<T>, TopoError> {
        match e.attr(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<T>().map(Some).map_err(|_| {
                self.err(
                    e,
                    format!("attribute {name}={v:?} of <{}> is not a number", e.name),
                )
            }),
        }
    }
}

/// Parses `data` into its root element. Malformed or truncated input is an error naming
/// `file`, the line and the column.
pub fn parse(file: &str, data: &[u8]) -> Result<Elem, TopoError> {
    let mut reader = Reader::from_reader(data);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Elem> = Vec::new();
    let mut root: Option<Elem> = None;
    let err_at = |off: u64, msg: String| TopoError::at_offset(file, data, off as usize, msg);
    loop {
        let start = reader.buffer_position();
        let ev = reader
            .read_event()
            .map_err(|e| err_at(reader.error_position(), format!("malformed XML: {e}")))?;
        match ev {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                let _ = e;
                return Err(err_at(start, "content after the root element".into()));
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a =
                        a.map_err(|x| err_at(start, format!("bad attribute in <{name}>: {x}")))?;
                    let k = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                    let v = a
                        .unescape_value()
                        .map_err(|x| {
                            err_at(start, format!("bad attribute value in <{name}>: {x}"))
                        })?
                        .into_owned();
                    attrs.push((k, v));
                }
                // Skip the whitespace quick-xml counts before the tag.
                let mut off = start as usize;
                while off < data.len() && data[off] != b'<' {
                    off += 1;
                }
                let el = Elem {
                    name,
                    attrs,
                    children: Vec::new(),
                    text: String::new(),
                    offset: off,
                };
                if matches!(ev, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(p) => p.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    if stack.len() > 256 {
                        return Err(err_at(start, "elements nested deeper than 256".into()));
                    }
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| err_at(start, "closing tag without opening tag".into()))?;
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(p) = stack.last_mut() {
                    let s = t
                        .unescape()
                        .map_err(|x| err_at(start, format!("bad text: {x}")))?;
                    if !p.text.is_empty() {
                        p.text.push(' ');
                    }
                    p.text.push_str(s.trim());
                } else if root.is_some() || !t.iter().all(|b| b.is_ascii_whitespace()) {
                    return Err(err_at(start, "text outside the root element".into()));
                }
            }
            Event::CData(t) => {
                if let Some(p) = stack.last_mut() {
                    p.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(TopoError::at_offset(
                        file,
                        data,
                        data.len(),
                        format!(
                            "unexpected end of file (truncated?): <{}> opened at line {} is not closed",
                            open.name,
                            crate::error::line_col(data, open.offset).0
                        ),
                    ));
                }
                return root.ok_or_else(|| err_at(0, "no root element (empty file?)".into()));
            }
            _ => {}
        }
    }
}

/// Escapes text for an attribute value.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => o.push_str(&format!("&#{};", c as u32)),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_errors() {
        let ok = parse("a.xml", b"<a x=\"1\">\n  <b y=\"2\"/>\n  <c>t 1</c>\n</a>").unwrap();
        assert_eq!(ok.children.len(), 2);
        assert_eq!(ok.children[1].text, "t 1");
        assert_eq!(
            crate::error::line_col(b"<a>\n  <b", ok.children[0].offset).0,
            2
        );
        let e = parse("t.xml", b"<a>\n<b>\n").unwrap_err().to_string();
        assert!(e.starts_with("t.xml:3:1:"), "{e}");
        let e = parse("m.xml", b"<a>\n<b></c></a>").unwrap_err().to_string();
        assert!(e.starts_with("m.xml:2:"), "{e}");
        assert!(parse("e.xml", b"").is_err());
        assert!(parse("e.xml", b"<a/><b/>").is_err());
    }
}
