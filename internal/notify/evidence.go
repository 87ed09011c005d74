package notify

import (
	"encoding"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// EvidenceRow is one key/value line of the evidence.
type EvidenceRow struct {
	Key, Value string
}

// EvidenceTable is evidence that is a list of rows (the addresses of a
// botnet, the accounts an address tried): a column table.
type EvidenceTable struct {
	Key     string
	Columns []string
	Rows    [][]string
	More    int // rows left out (only the first 50 are shown)
}

// Limits of the evidence shown in mail (the webhook gets all of it).
const (
	maxTableRows = 50
	maxListItems = 50
	maxCell      = 200 // runes in one cell or value
	maxDepth     = 4
)

// timeLayout shows evidence times.
const timeLayout = "2006-01-02 15:04:05 MST"

// layoutEvidence splits the evidence into key/value rows and tables, in
// key order. Every string in them is safe to print (see display).
func layoutEvidence(ev map[string]any) ([]EvidenceRow, []EvidenceTable) {
	keys := make([]string, 0, len(ev))
	for k := range ev {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var rows []EvidenceRow
	var tables []EvidenceTable
	for _, k := range keys {
		v := reflect.ValueOf(ev[k])
		if t, ok := tableOf(v); ok {
			t.Key = clip(display(k), maxCell)
			tables = append(tables, t)
			continue
		}
		rows = append(rows, EvidenceRow{Key: clip(display(k), maxCell), Value: clip(cell(v, 0), maxCell)})
	}
	return rows, tables
}

// evidenceText lays the evidence out as plain text: aligned key/value
// rows, then each table with a header line. Lines carry no trailing
// spaces.
func evidenceText(rows []EvidenceRow, tables []EvidenceTable) string {
	var b strings.Builder
	if len(rows) == 0 && len(tables) == 0 {
		return "  (none)\n"
	}
	kw := 0
	for _, r := range rows {
		kw = max(kw, min(utf8.RuneCountInString(r.Key), 24))
	}
	for _, r := range rows {
		b.WriteString("  ")
		writeRow(&b, []string{r.Key, r.Value}, []int{kw, 0})
	}
	for _, t := range tables {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		n := len(t.Rows) + t.More
		fmt.Fprintf(&b, "  %s (%d %s)\n", t.Key, n, plural(n, "row", "rows"))
		w := make([]int, len(t.Columns))
		for i, c := range t.Columns {
			w[i] = utf8.RuneCountInString(c)
		}
		for _, r := range t.Rows {
			for i, c := range r {
				w[i] = max(w[i], utf8.RuneCountInString(c))
			}
		}
		b.WriteString("    ")
		writeRow(&b, t.Columns, w)
		for _, r := range t.Rows {
			b.WriteString("    ")
			writeRow(&b, r, w)
		}
		if t.More > 0 {
			fmt.Fprintf(&b, "    … %d more %s\n", t.More, plural(t.More, "row", "rows"))
		}
	}
	return b.String()
}

// writeRow writes cells padded to widths, two spaces apart, and a newline;
// the last cell is not padded.
func writeRow(b *strings.Builder, cells []string, widths []int) {
	var l strings.Builder
	for i, c := range cells {
		l.WriteString(c)
		if i == len(cells)-1 {
			break
		}
		l.WriteString(strings.Repeat(" ", max(widths[i]-utf8.RuneCountInString(c), 0)+2))
	}
	b.WriteString(strings.TrimRight(l.String(), " "))
	b.WriteString("\n")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// tableOf returns v as a table when it is a non-empty list of structs or
// maps.
func tableOf(v reflect.Value) (EvidenceTable, bool) {
	v = deref(v)
	if !v.IsValid() || (v.Kind() != reflect.Slice && v.Kind() != reflect.Array) || v.Len() == 0 {
		return EvidenceTable{}, false
	}
	var t EvidenceTable
	col := map[string]int{}
	type kv struct {
		k string
		v reflect.Value
	}
	var rows [][]kv
	for i := 0; i < v.Len(); i++ {
		e := deref(v.Index(i))
		if !e.IsValid() {
			continue
		}
		fields, ok := fieldsOf(e)
		if !ok {
			return EvidenceTable{}, false
		}
		if len(rows) >= maxTableRows {
			t.More++
			continue
		}
		var r []kv
		for _, f := range fields {
			if _, seen := col[f.name]; !seen {
				col[f.name] = len(t.Columns)
				t.Columns = append(t.Columns, clip(display(f.name), maxCell))
			}
			r = append(r, kv{f.name, f.v})
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		return EvidenceTable{}, false
	}
	for _, r := range rows {
		cells := make([]string, len(t.Columns))
		for _, f := range r {
			cells[col[f.k]] = clip(cell(f.v, 1), 64)
		}
		t.Rows = append(t.Rows, cells)
	}
	return t, true
}

type field struct {
	name string
	v    reflect.Value
}

// fieldsOf lists the fields of a struct (exported ones, named by their
// json tag) or the entries of a map (sorted by key); ok is false for
// anything else, and for types shown as one value (time.Time, addresses).
func fieldsOf(v reflect.Value) ([]field, bool) {
	if scalarType(v) {
		return nil, false
	}
	switch v.Kind() {
	case reflect.Struct:
		var fs []field
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			name := sf.Name
			if tag, ok := sf.Tag.Lookup("json"); ok {
				tn, _, _ := strings.Cut(tag, ",")
				if tn == "-" {
					continue
				}
				if tn != "" {
					name = tn
				}
			}
			fs = append(fs, field{name, v.Field(i)})
		}
		return fs, true
	case reflect.Map:
		fs := make([]field, 0, v.Len())
		it := v.MapRange()
		for it.Next() {
			fs = append(fs, field{fmt.Sprint(it.Key().Interface()), it.Value()})
		}
		sort.Slice(fs, func(i, j int) bool { return fs[i].name < fs[j].name })
		return fs, true
	}
	return nil, false
}

// scalarType tells whether v is shown as one value although it is a
// struct (time.Time, netip.Addr and other types that print themselves).
func scalarType(v reflect.Value) bool {
	_, ok := special(v)
	return ok
}

// special shows the types that know how to print themselves.
func special(v reflect.Value) (string, bool) {
	if !v.CanInterface() {
		return "", false
	}
	switch x := v.Interface().(type) {
	case time.Time:
		if x.IsZero() {
			return "", true
		}
		return x.UTC().Format(timeLayout), true
	case time.Duration:
		return x.String(), true
	case error:
		return display(x.Error()), true
	case encoding.TextMarshaler:
		if b, err := x.MarshalText(); err == nil {
			return display(string(b)), true
		}
	case fmt.Stringer:
		return display(x.String()), true
	}
	return "", false
}

// deref follows pointers and interfaces; nil gives an invalid Value.
func deref(v reflect.Value) reflect.Value {
	for v.IsValid() && (v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface) {
		if v.IsNil() {
			return reflect.Value{}
		}
		v = v.Elem()
	}
	return v
}

// cell shows v on one line: lists joined by ", ", structs and maps as
// "key=value" pairs. Strings go through display.
func cell(v reflect.Value, depth int) string {
	for v.IsValid() && (v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface) {
		if v.IsNil() {
			return ""
		}
		if s, ok := special(v); ok {
			return s
		}
		v = v.Elem()
	}
	if !v.IsValid() {
		return ""
	}
	if depth > maxDepth {
		return "…"
	}
	if s, ok := special(v); ok {
		return s
	}
	switch v.Kind() {
	case reflect.String:
		return display(v.String())
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.FormatUint(v.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		f := v.Float()
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return strconv.FormatFloat(f, 'g', -1, 64)
		}
		if f == math.Trunc(f) && math.Abs(f) < 1e15 {
			return strconv.FormatFloat(f, 'f', -1, 64)
		}
		return strconv.FormatFloat(f, 'g', 6, 64)
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8 {
			return display(string(v.Bytes()))
		}
		parts := make([]string, 0, min(v.Len(), maxListItems))
		for i := 0; i < v.Len() && i < maxListItems; i++ {
			parts = append(parts, cell(v.Index(i), depth+1))
		}
		s := strings.Join(parts, ", ")
		if v.Len() > maxListItems {
			s += fmt.Sprintf(", … (%d more)", v.Len()-maxListItems)
		}
		return s
	case reflect.Struct, reflect.Map:
		fs, _ := fieldsOf(v)
		parts := make([]string, 0, len(fs))
		for _, f := range fs {
			parts = append(parts, display(f.name)+"="+cell(f.v, depth+1))
		}
		return strings.Join(parts, " ")
	}
	return display(fmt.Sprint(v))
}

// display makes text from outside (an account a client typed, evidence)
// safe to print on one line of a mail body or header: control characters
// (CR and LF included), Unicode line and paragraph separators, and bytes
// that are not UTF-8 are written as Go escapes (\r, \n, \x1b, \u2028), and
// a backslash as \\, so what is shown is unambiguous.
func display(s string) string {
	clean := true
	for _, r := range s {
		if r == '\\' || r == utf8.RuneError || unsafeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case unsafeRune(r):
			q := strconv.QuoteRune(r) // e.g. '\n', '\x1b', '\u2028'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' ||
		r == '\u0085' || r == '\ufeff' || (r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069')
}

// clip cuts s to n runes, marking the cut with "…".
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for k := range s {
		if i == n-1 {
			return s[:k] + "…"
		}
		i++
	}
	return s
}
