//! Customer attributes that are never stored: the deny-list applied to every customer
//! event before it is written to a topic.

use std::borrow::Cow;

use crate::Event;

/// Customer attributes that are never stored (`--deny-attributes`, for example
/// `email,phone`): dropped from every customer event before it is written to a topic.
/// Names compare without regard to case.
#[derive(Debug, Clone, Default)]
pub struct DenyList(Vec<String>);

impl DenyList {
    /// From a comma-separated list of attribute names.
    pub fn parse(spec: &str) -> Self {
        Self(
            spec.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The event without the denied attributes, copied only when it has some.
    pub fn redacted<'a>(&self, event: &'a Event) -> Cow<'a, Event> {
        match event {
            Event::Customer(c)
                if c.attributes
                    .keys()
                    .any(|k| self.0.contains(&k.to_ascii_lowercase())) =>
            {
                let mut owned = event.clone();
                self.apply(&mut owned);
                Cow::Owned(owned)
            }
            _ => Cow::Borrowed(event),
        }
    }

    /// Drops the denied attributes of a customer event; other events are untouched.
    pub fn apply(&self, event: &mut Event) {
        if let (false, Event::Customer(c)) = (self.0.is_empty(), event) {
            c.attributes
                .retain(|k, _| !self.0.contains(&k.to_ascii_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Customer;

    #[test]
    fn denied_attributes_are_dropped_whatever_their_case() {
        let deny = DenyList::parse(" Email, phone ,,");
        let mut e = Event::Customer(Customer {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            occurred_at: 1,
            signup_at: None,
            country: None,
            channel: None,
            loyalty_member: false,
            attributes: [("EMAIL", "a@b.c"), ("phone", "1"), ("segment", "x")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        });
        assert!(matches!(deny.redacted(&e), std::borrow::Cow::Owned(_)));
        deny.apply(&mut e);
        assert!(matches!(deny.redacted(&e), std::borrow::Cow::Borrowed(_)));
        let Event::Customer(c) = e else {
            unreachable!("a customer stays a customer")
        };
        assert_eq!(c.attributes.keys().collect::<Vec<_>>(), vec!["segment"]);
        assert!(DenyList::parse(" , ").is_empty());
    }
}
