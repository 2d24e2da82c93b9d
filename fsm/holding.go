package fsm

// Holding returns the lease namespace/name if holder holds it with token,
// as a renewal applied now would find it; otherwise the lease (nil when
// there is none) and ErrNotFound or ErrNotHolder.
func (f *FSM) Holding(namespace, name, holder string, token uint64) (*Lease, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.current(namespace, name, holder, token)
}
