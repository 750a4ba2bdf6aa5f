//! Intrusive doubly linked lists over slab indexes, as Postfix's
//! `QMGR_LIST_*` macros: O(1) unlink from the middle, which a queue's
//! `todo` list, a peer's entry list and a transport's job list all need.
//!
//! A node may sit on several lists at once; each list reaches the node's
//! links through an accessor function. Invariant: a node's links are
//! [`Links::NONE`] exactly when it is on no list of that kind, and a list's
//! `len` counts its nodes.

use slab::Slab;

/// "No node": Postfix's null pointer in a list.
pub(crate) const NIL: u32 = u32::MAX;

/// A slab index as stored in links. More than four billion live objects
/// would be a broken invariant of the active queue's limits.
pub(crate) fn ix(key: usize) -> u32 {
    match u32::try_from(key) {
        Ok(k) if k != NIL => k,
        _ => panic!("slab index {key} does not fit a list link"),
    }
}

/// One node's place on one list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Links {
    pub prev: u32,
    pub next: u32,
}

impl Links {
    pub(crate) const NONE: Links = Links {
        prev: NIL,
        next: NIL,
    };
}

/// A list head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct List {
    pub head: u32,
    pub tail: u32,
    pub len: u32,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

/// How a list reaches a node's links.
pub(crate) type Access<T> = fn(&mut T) -> &mut Links;

fn node<'a, T>(slab: &'a mut Slab<T>, i: u32, what: &str) -> &'a mut T {
    match slab.get_mut(i as usize) {
        Some(n) => n,
        None => panic!("{what}: list names freed node {i}"),
    }
}

/// Inserts `i` before `next` (at the tail when `next` is [`NIL`]).
pub(crate) fn insert_before<T>(
    slab: &mut Slab<T>,
    list: &mut List,
    i: u32,
    next: u32,
    l: Access<T>,
) {
    let prev = if next == NIL {
        list.tail
    } else {
        l(node(slab, next, "insert_before")).prev
    };
    *l(node(slab, i, "insert_before")) = Links { prev, next };
    if prev == NIL {
        list.head = i;
    } else {
        l(node(slab, prev, "insert_before")).next = i;
    }
    if next == NIL {
        list.tail = i;
    } else {
        l(node(slab, next, "insert_before")).prev = i;
    }
    list.len += 1;
}

pub(crate) fn push_back<T>(slab: &mut Slab<T>, list: &mut List, i: u32, l: Access<T>) {
    insert_before(slab, list, i, NIL, l);
}

pub(crate) fn push_front<T>(slab: &mut Slab<T>, list: &mut List, i: u32, l: Access<T>) {
    let head = list.head;
    insert_before(slab, list, i, head, l);
}

/// Removes `i`, which must be on `list`.
pub(crate) fn unlink<T>(slab: &mut Slab<T>, list: &mut List, i: u32, l: Access<T>) {
    let Links { prev, next } = std::mem::replace(l(node(slab, i, "unlink")), Links::NONE);
    if prev == NIL {
        list.head = next;
    } else {
        l(node(slab, prev, "unlink")).next = next;
    }
    if next == NIL {
        list.tail = prev;
    } else {
        l(node(slab, next, "unlink")).prev = prev;
    }
    list.len = match list.len.checked_sub(1) {
        Some(n) => n,
        None => panic!("unlink: list length underflow at node {i}"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(l: &mut Links) -> &mut Links {
        l
    }

    fn collect(slab: &Slab<Links>, list: &List) -> Vec<u32> {
        let mut v = Vec::new();
        let mut i = list.head;
        while i != NIL {
            v.push(i);
            i = slab[i as usize].next;
        }
        v
    }

    #[test]
    fn push_insert_unlink_keep_order_and_length() {
        let mut slab: Slab<Links> = Slab::new();
        let mut list = List::default();
        let a = ix(slab.insert(Links::NONE));
        let b = ix(slab.insert(Links::NONE));
        let c = ix(slab.insert(Links::NONE));
        push_back(&mut slab, &mut list, a, links);
        push_back(&mut slab, &mut list, c, links);
        insert_before(&mut slab, &mut list, b, c, links);
        assert_eq!(collect(&slab, &list), vec![a, b, c]);
        unlink(&mut slab, &mut list, b, links);
        assert_eq!(collect(&slab, &list), vec![a, c]);
        push_front(&mut slab, &mut list, b, links);
        assert_eq!(collect(&slab, &list), vec![b, a, c]);
        assert_eq!(list.len, 3);
        assert_eq!(list.tail, c);
    }
}
