//! Trigger connections on `public/qmgr`: each accepted client is read by a
//! task of its own, so a slow or silent client never stalls deliveries;
//! the letters it wrote go to the event loop on the trigger channel, which
//! is separate from the agents' channel because they are a different kind
//! of event (scan requests, answered by telling master we are idle).
//!
//! A read that fails or times out counts as no letters: the loop still
//! tells master we are done, as Postfix's trigger server does.

use tokio::net::UnixStream;
use tokio::sync::mpsc::UnboundedSender;

/// Reads one trigger from `stream` in a task and sends its letters to `tx`.
pub(crate) fn spawn_reader(mut stream: UnixStream, tx: UnboundedSender<Vec<u8>>) {
    tokio::task::spawn_local(async move {
        let letters = rqmgr_ipc::trigger::read_trigger(&mut stream)
            .await
            .unwrap_or_default();
        let _ = tx.send(letters);
    });
}
