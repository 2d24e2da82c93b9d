package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// nfqueue delays packets in a network namespace: an iptables NFQUEUE rule
// hands them to the kernel's queue, and nfqueue gives each one its ACCEPT
// verdict delay after it arrived, in arrival order. The kernel of the
// machines this suite runs on may lack the netem qdisc, which would do
// this in the kernel; netfilter's queue is built in wherever iptables is.
//
// The netlink protocol is spoken with the syscall package alone (the
// packets' contents are not copied, only their ids): see
// include/uapi/linux/netfilter/nfnetlink_queue.h.
type nfqueue struct {
	fd    int
	num   uint16
	delay time.Duration

	items chan nfqPacket
	stop  chan struct{} // closed by close: accept the rest at once
	done  chan struct{} // closed when both loops have ended
	once  sync.Once

	// delayed counts the packets given a delayed verdict.
	delayed atomic.Int64
	errMu   sync.Mutex
	err     error // the first error of the loops
}

type nfqPacket struct {
	id  uint32
	due time.Time
}

// Constants of nfnetlink_queue.
const (
	nfnlSubsysQueue = 3
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2

	nfqaPacketHdr      = 1
	nfqaVerdictHdr     = 2
	nfqaCfgCmd         = 1
	nfqaCfgParams      = 2
	nfqaCfgQueueMaxlen = 3

	nfqnlCfgCmdBind = 1
	nfqnlCopyMeta   = 1
	nfAccept        = 1

	nlaTypeMask = 0x3fff // without NLA_F_NESTED and NLA_F_NET_BYTEORDER
)

// openNfqueue binds queue num in the network namespace at nsPath (made by
// `ip netns add`) and starts delaying what the queue receives. Add the
// NFQUEUE rule after it, so that no packet waits for a listener.
func openNfqueue(nsPath string, num uint16, delay time.Duration) (*nfqueue, error) {
	fd, err := netlinkIn(nsPath)
	if err != nil {
		return nil, err
	}
	q := &nfqueue{fd: fd, num: num, delay: delay, items: make(chan nfqPacket, 1<<16), stop: make(chan struct{}), done: make(chan struct{})}
	if err := q.configure(); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); q.read() }()
	go func() { defer wg.Done(); q.verdicts() }()
	go func() { wg.Wait(); close(q.done) }()
	return q, nil
}

// netlinkIn opens a netfilter netlink socket inside the namespace at
// nsPath. The socket stays in that namespace whatever thread uses it.
func netlinkIn(nsPath string) (int, error) {
	ns, err := os.Open(nsPath)
	if err != nil {
		return -1, err
	}
	defer ns.Close()
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// This thread enters the namespace only to make the socket, and
		// goes back before it is unlocked. It must not end instead: the
		// nodes die with the thread that started them (Pdeathsig), and
		// the runtime may have started them on this one.
		runtime.LockOSThread()
		trap, ok := setnsTrap[runtime.GOARCH]
		if !ok {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("setns: syscall number unknown on %s", runtime.GOARCH)}
			return
		}
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, err}
			return
		}
		defer self.Close()
		if _, _, e := syscall.RawSyscall(trap, ns.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("setns %s: %w", nsPath, e)}
			return
		}
		fd, serr := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_NETFILTER)
		if _, _, e := syscall.RawSyscall(trap, self.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			// Stuck in the other namespace: stay locked, so that the
			// thread ends with this goroutine and runs nothing else.
			if serr == nil {
				syscall.Close(fd)
			}
			ch <- result{-1, fmt.Errorf("setns back: %w", e)}
			return
		}
		runtime.UnlockOSThread()
		if serr != nil {
			ch <- result{-1, fmt.Errorf("netlink socket: %w", serr)}
			return
		}
		ch <- result{fd, nil}
	}()
	r := <-ch
	if r.err != nil {
		return -1, r.err
	}
	fail := func(err error) (int, error) {
		syscall.Close(r.fd)
		return -1, err
	}
	if err := syscall.Bind(r.fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return fail(fmt.Errorf("netlink bind: %w", err))
	}
	// A short receive timeout lets the reader notice close.
	tv := syscall.NsecToTimeval(int64(100 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(r.fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return fail(err)
	}
	_ = syscall.SetsockoptInt(r.fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 4<<20)
	return r.fd, nil
}

// setnsTrap is setns(2)'s number per architecture: the syscall package
// predates setns and does not name it.
var setnsTrap = map[string]uintptr{
	"amd64": 308, "386": 346, "arm64": 268, "arm": 375, "riscv64": 268,
	"loong64": 268, "ppc64": 350, "ppc64le": 350, "s390x": 339,
}

func nlAttr(typ uint16, payload []byte) []byte {
	b := make([]byte, 4+len(payload), (4+len(payload)+3)&^3)
	binary.NativeEndian.PutUint16(b[0:2], uint16(4+len(payload)))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	copy(b[4:], payload)
	return b[:cap(b)]
}

// message builds one nfnetlink_queue message to queue q.num.
func (q *nfqueue) message(msgType uint16, flags uint16, attrs ...[]byte) []byte {
	size := syscall.NLMSG_HDRLEN + 4
	for _, a := range attrs {
		size += len(a)
	}
	b := make([]byte, syscall.NLMSG_HDRLEN+4, size)
	binary.NativeEndian.PutUint32(b[0:4], uint32(size))
	binary.NativeEndian.PutUint16(b[4:6], nfnlSubsysQueue<<8|msgType)
	binary.NativeEndian.PutUint16(b[6:8], syscall.NLM_F_REQUEST|flags)
	// nfgenmsg: family AF_UNSPEC, version 0, the queue number big-endian.
	binary.BigEndian.PutUint16(b[syscall.NLMSG_HDRLEN+2:], q.num)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func (q *nfqueue) send(b []byte) error {
	return syscall.Sendto(q.fd, b, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK})
}

// configure binds the queue for IPv4 and asks for packet ids only.
func (q *nfqueue) configure() error {
	cmd := []byte{nfqnlCfgCmdBind, 0, 0, 0}
	binary.BigEndian.PutUint16(cmd[2:], syscall.AF_INET)
	params := make([]byte, 5)
	params[4] = nfqnlCopyMeta
	maxlen := binary.BigEndian.AppendUint32(nil, 1<<16)
	for _, m := range [][]byte{
		q.message(nfqnlMsgConfig, syscall.NLM_F_ACK, nlAttr(nfqaCfgCmd, cmd)),
		q.message(nfqnlMsgConfig, syscall.NLM_F_ACK, nlAttr(nfqaCfgParams, params)),
		q.message(nfqnlMsgConfig, syscall.NLM_F_ACK, nlAttr(nfqaCfgQueueMaxlen, maxlen)),
	} {
		if err := q.send(m); err != nil {
			return fmt.Errorf("nfqueue config: %w", err)
		}
		if err := q.ack(); err != nil {
			return fmt.Errorf("nfqueue config: %w", err)
		}
	}
	return nil
}

// ack reads the answer to a request sent with NLM_F_ACK.
func (q *nfqueue) ack() error {
	buf := make([]byte, 8192)
	n, _, err := syscall.Recvfrom(q.fd, buf, 0)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == syscall.NLMSG_ERROR && len(m.Data) >= 4 {
			if errno := int32(binary.NativeEndian.Uint32(m.Data[0:4])); errno != 0 {
				return syscall.Errno(-errno)
			}
			return nil
		}
	}
	return errors.New("no acknowledgement")
}

func (q *nfqueue) fail(err error) {
	q.errMu.Lock()
	defer q.errMu.Unlock()
	if q.err == nil {
		q.err = err
	}
}

// read receives queued packets until close, then until the socket is
// empty (close removes the rule first, so nothing more comes).
func (q *nfqueue) read() {
	defer close(q.items)
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(q.fd, buf, 0)
		if err != nil {
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				select {
				case <-q.stop:
					return
				default:
					continue
				}
			case errors.Is(err, syscall.ENOBUFS):
				// Packets whose messages were lost wait in the kernel
				// until the queue is unbound, which drops them: TCP
				// sends them again.
				q.fail(fmt.Errorf("nfqueue: messages lost: %w", err))
				continue
			}
			q.fail(fmt.Errorf("nfqueue receive: %w", err))
			return
		}
		now := time.Now()
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			q.fail(err)
			continue
		}
		for _, m := range msgs {
			if m.Header.Type != nfnlSubsysQueue<<8|nfqnlMsgPacket || len(m.Data) < 4 {
				continue
			}
			if id, ok := packetID(m.Data[4:]); ok {
				q.items <- nfqPacket{id: id, due: now.Add(q.delay)}
			}
		}
	}
}

// packetID finds the packet id in a packet message's attributes.
func packetID(attrs []byte) (uint32, bool) {
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs[0:2]))
		typ := binary.NativeEndian.Uint16(attrs[2:4]) & nlaTypeMask
		if l < 4 || l > len(attrs) {
			return 0, false
		}
		if typ == nfqaPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(attrs[4:8]), true
		}
		attrs = attrs[(l+3)&^3:]
	}
	return 0, false
}

// verdicts accepts each packet when it is due, or at once after close.
func (q *nfqueue) verdicts() {
	for p := range q.items {
		if wait := time.Until(p.due); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-q.stop:
			}
			t.Stop()
		}
		hdr := binary.BigEndian.AppendUint32(nil, nfAccept)
		hdr = binary.BigEndian.AppendUint32(hdr, p.id)
		if err := q.send(q.message(nfqnlMsgVerdict, 0, nlAttr(nfqaVerdictHdr, hdr))); err != nil {
			q.fail(fmt.Errorf("nfqueue verdict: %w", err))
		}
		q.delayed.Add(1)
	}
}

// close accepts every packet still held, waits for the loops and closes
// the socket. Remove the NFQUEUE rule first. It returns how many packets
// were delayed, and the first error the loops met.
func (q *nfqueue) close() (int64, error) {
	q.once.Do(func() {
		close(q.stop)
		<-q.done
		syscall.Close(q.fd)
	})
	q.errMu.Lock()
	defer q.errMu.Unlock()
	return q.delayed.Load(), q.err
}
