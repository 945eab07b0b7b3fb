//! Reply template slots, shared by every entry with the same options.

use std::sync::Arc;

use dhcp_common::{ReplyTemplate, TEMPLATE_OPTIONS_MAX};

use super::FastMaps;

pub(super) struct Slot {
    id: u32,
    refs: usize,
}

impl FastMaps {
    pub(super) fn acquire(&mut self, template: &Arc<[u8]>) -> Option<u32> {
        if let Some(s) = self.slots.get_mut(template) {
            s.refs += 1;
            return Some(s.id);
        }
        let id = self.free.pop_front()?;
        let mut t = ReplyTemplate {
            sum: dhcp_common::options_sum(template),
            options_len: template.len() as u16,
            _pad: [0; 2],
            options: [0; TEMPLATE_OPTIONS_MAX],
        };
        t.options[..template.len()].copy_from_slice(template);
        if let Err(e) = self.templates.set(id, t, 0) {
            tracing::warn!("writing XDP reply template {id}: {e}");
            self.free.push_front(id);
            return None;
        }
        self.slots.insert(template.clone(), Slot { id, refs: 1 });
        Some(id)
    }

    pub(super) fn release(&mut self, template: &Arc<[u8]>) {
        if let Some(s) = self.slots.get_mut(template) {
            s.refs -= 1;
            if s.refs == 0 {
                let id = s.id;
                self.slots.remove(template);
                self.free.push_back(id);
            }
        }
    }
}
