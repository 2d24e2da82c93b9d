package labels

import "testing"

func TestSelector(t *testing.T) {
	lbl := map[string]string{"app": "web", "tier": "front"}
	tests := []struct {
		name, sel string
		want      bool
		bad       bool
	}{
		{"empty matches all", "", true, false},
		{"equal", "app=web", true, false},
		{"double equal", "app==web", true, false},
		{"not equal", "app!=web", false, false},
		{"not equal other", "app!=api", true, false},
		{"exists", "tier", true, false},
		{"not exists", "!tier", false, false},
		{"all must hold", "app=web,tier=back", false, false},
		{"prefixed key", "example.com/app=x", false, false},
		{"bad key", "bad key!=x", false, true},
		{"bad value", "app=a=b", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSelector(tc.sel)
			if (err != nil) != tc.bad {
				t.Fatalf("ParseSelector(%q) error %v, want bad=%v", tc.sel, err, tc.bad)
			}
			if err == nil && s.Matches(lbl) != tc.want {
				t.Fatalf("%q matches %v: got %v, want %v", tc.sel, lbl, !tc.want, tc.want)
			}
		})
	}
}
