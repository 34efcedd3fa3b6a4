//! Subsonic's two encodings of one answer. Answers are built once, as JSON
//! values, and written as JSON or as Subsonic's XML by one convention:
//! an object is an element whose scalar members are attributes (the member
//! `value` is its text), whose object members are child elements, and
//! whose array members are repeated child elements of the member's name.

use serde_json::{Map, Value};

use crate::text::escape_xml_into;

/// Subsonic's XML namespace.
const NAMESPACE: &str = "http://subsonic.org/restapi";

/// The whole XML document of an answer whose root attributes and children
/// are `root`'s members.
pub(super) fn document(root: &Map<String, Value>) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let mut with_namespace = Map::new();
    with_namespace.insert("xmlns".into(), Value::String(NAMESPACE.into()));
    with_namespace.extend(root.clone());
    element(&mut out, "subsonic-response", &Value::Object(with_namespace));
    out
}

fn element(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Object(members) => {
            out.push('<');
            out.push_str(name);
            let mut text = None;
            for (key, member) in members {
                match member {
                    Value::Object(_) | Value::Array(_) => {}
                    Value::Null => {}
                    scalar if key == "value" => text = Some(scalar_text(scalar)),
                    scalar => {
                        out.push(' ');
                        out.push_str(key);
                        out.push_str("=\"");
                        escape_xml_into(out, &scalar_text(scalar));
                        out.push('"');
                    }
                }
            }
            let children: Vec<(&String, &Value)> = members
                .iter()
                .filter(|(_, member)| matches!(member, Value::Object(_) | Value::Array(_)))
                .collect();
            if children.is_empty() && text.is_none() {
                out.push_str("/>");
                return;
            }
            out.push('>');
            if let Some(text) = text {
                escape_xml_into(out, &text);
            }
            for (key, child) in children {
                match child {
                    Value::Array(items) => {
                        for item in items {
                            element(out, key, item);
                        }
                    }
                    object => element(out, key, object),
                }
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        Value::Null => {}
        scalar => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            escape_xml_into(out, &scalar_text(scalar));
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_become_attributes_and_children() {
        let root = json!({
            "status": "ok",
            "artists": {"ignoredArticles": "The", "index": [
                {"name": "A", "artist": [{"id": "1", "name": "Ada & <Bo>"}]}
            ]},
            "genres": {"genre": [{"songCount": 2, "value": "Rock"}]},
            "empty": null
        });
        let Value::Object(root) = root else { panic!("an object") };
        let text = document(&root);
        assert!(text.contains(r#"xmlns="http://subsonic.org/restapi""#), "{text}");
        assert!(text.contains(r#" status="ok""#), "{text}");
        assert!(text.contains(r#"<artists ignoredArticles="The"><index name="A"><artist id="1" name="Ada &amp; &lt;Bo&gt;"/></index></artists>"#), "{text}");
        assert!(text.contains(r#"<genre songCount="2">Rock</genre>"#), "{text}");
        assert!(!text.contains("empty"));
        assert!(text.ends_with("</subsonic-response>"));
    }
}
