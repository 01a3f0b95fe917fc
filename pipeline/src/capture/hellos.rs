//! The ClientHellos processes in scope sent (`HelloRecord`, while secrets are traced): which
//! socket sent which client random. They tie a secret to its connection where its function
//! gives only half of the tie: Go's `writeKeyLog` gives a client random and no connection
//! handle (the random names the socket, whose connection the handle's calls reveal), and
//! stripped BoringSSL's `ssl_log_secret` a handle and no client random (the handle's socket,
//! known when the handle moves data, names the random of its last ClientHello).

use std::collections::{HashMap, VecDeque};

use probectl_common::capacity::{HELLOS_KEPT, HELLOS_PER_SOCKET as PER_SOCKET};
use probectl_common::{HelloRecord, SECRET_RANDOM_MAX};

/// A ClientHello's random.
pub type Random = [u8; SECRET_RANDOM_MAX];

/// The ClientHellos seen, by socket and by random, bounded by [`HELLOS_KEPT`].
#[derive(Debug, Default)]
pub struct Hellos {
    /// (pid, fd) -> its ClientHellos, (time, random), oldest first.
    by_socket: HashMap<(u32, i32), VecDeque<(u64, Random)>>,
    /// random -> the socket that sent it.
    by_random: HashMap<Random, (u32, i32)>,
    /// Randoms in the order they came, for the bound.
    order: VecDeque<Random>,
    /// ClientHellos seen, and forgotten because of the bound.
    pub seen: u64,
    pub forgotten: u64,
}

impl Hellos {
    pub fn add(&mut self, hello: &HelloRecord) {
        self.seen += 1;
        let socket = (hello.pid, hello.fd);
        if let Some(previous) = self.by_random.insert(hello.random, socket) {
            // The same random again (a retransmitted write, or the second ClientHello after a
            // HelloRetryRequest, which repeats it): one entry.
            self.remove_from_socket(previous, &hello.random);
        } else {
            self.order.push_back(hello.random);
        }
        let hellos = self.by_socket.entry(socket).or_default();
        if hellos.len() >= PER_SOCKET {
            if let Some((_, oldest)) = hellos.pop_front() {
                self.by_random.remove(&oldest);
                self.forgotten += 1;
            }
        }
        hellos.push_back((hello.ts_ns, hello.random));
        while self.order.len() > HELLOS_KEPT {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(socket) = self.by_random.remove(&oldest) {
                self.remove_from_socket(socket, &oldest);
                self.forgotten += 1;
            }
        }
        // `order` may hold randoms already gone (replaced per socket): it is trimmed when it
        // outgrows what is kept twice over.
        if self.order.len() > 2 * self.by_random.len() + PER_SOCKET {
            let by_random = &self.by_random;
            self.order.retain(|random| by_random.contains_key(random));
        }
    }

    fn remove_from_socket(&mut self, socket: (u32, i32), random: &Random) {
        if let Some(hellos) = self.by_socket.get_mut(&socket) {
            hellos.retain(|(_, kept)| kept != random);
            if hellos.is_empty() {
                self.by_socket.remove(&socket);
            }
        }
    }

    /// The random of the last ClientHello `fd` of `pid` sent before `ts_ns` (a secret's
    /// time: its handshake's ClientHello came before it).
    pub fn random_of(&self, pid: u32, fd: i32, ts_ns: u64) -> Option<Random> {
        self.by_socket
            .get(&(pid, fd))?
            .iter()
            .rev()
            .find(|(sent, _)| *sent <= ts_ns)
            .map(|(_, random)| *random)
    }

    /// The socket that sent the ClientHello with `random`.
    pub fn socket_of(&self, random: &Random) -> Option<(u32, i32)> {
        self.by_random.get(random).copied()
    }

    /// Forgets the ClientHellos of a process that exited (its fds are gone).
    pub fn remove_process(&mut self, pid: u32) {
        self.by_socket.retain(|(owner, _), _| *owner != pid);
        self.by_random.retain(|_, (owner, _)| *owner != pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(pid: u32, fd: i32, ts_ns: u64, byte: u8) -> HelloRecord {
        HelloRecord {
            kind: probectl_common::record_kind::HELLO,
            pid,
            tid: pid,
            fd,
            ts_ns,
            random: [byte; SECRET_RANDOM_MAX],
        }
    }

    #[test]
    fn a_socket_names_its_last_random_before_a_time_and_a_random_its_socket() {
        let mut hellos = Hellos::default();
        hellos.add(&hello(1, 5, 100, 0xaa));
        hellos.add(&hello(1, 6, 110, 0xbb));
        // fd 5 closed and reused by a new connection.
        hellos.add(&hello(1, 5, 200, 0xcc));
        assert_eq!(hellos.random_of(1, 5, 150), Some([0xaa; 32]));
        assert_eq!(hellos.random_of(1, 5, 250), Some([0xcc; 32]));
        assert_eq!(hellos.random_of(1, 5, 50), None);
        assert_eq!(hellos.random_of(2, 5, 250), None);
        assert_eq!(hellos.socket_of(&[0xbb; 32]), Some((1, 6)));
        // A ClientHello sent again (after a HelloRetryRequest) is one entry.
        hellos.add(&hello(1, 6, 120, 0xbb));
        assert_eq!(hellos.by_socket[&(1, 6)].len(), 1);
        hellos.remove_process(1);
        assert_eq!(hellos.socket_of(&[0xaa; 32]), None);
        assert_eq!(hellos.random_of(1, 5, 250), None);
    }

    #[test]
    fn the_oldest_are_forgotten_past_the_bound() {
        let mut hellos = Hellos::default();
        for index in 0..HELLOS_KEPT as u64 + 10 {
            let mut record = hello(1, index as i32, index, 0);
            record.random[..8].copy_from_slice(&index.to_le_bytes());
            hellos.add(&record);
        }
        assert_eq!(hellos.by_random.len(), HELLOS_KEPT);
        assert_eq!(hellos.forgotten, 10);
        assert_eq!(hellos.random_of(1, 0, 1000), None);
        assert!(hellos.random_of(1, 10, u64::MAX).is_some());
        assert!(hellos.order.len() <= 2 * HELLOS_KEPT + PER_SOCKET);
    }
}
