package domain

import "strings"

// Roles of API clients; a client's blackholes carry "<role>:<name>" as
// their origin.
const (
	RoleOperator = "operator"
	RolePartner  = "partner"
)

// OriginReports is the origin of a blackhole caused by report fusion.
const OriginReports = "reports"

// ClientOrigin is the origin of a blackhole added by an API client.
func ClientOrigin(role, name string) string { return role + ":" + name }

// DetectorOrigin is the origin of a blackhole added by a detector rule.
func DetectorOrigin(rule string) string { return "detector:" + rule }

// DetectorRule returns the rule of a detector origin.
func DetectorRule(origin string) (string, bool) { return strings.CutPrefix(origin, "detector:") }

// IsOperatorOrigin reports whether origin is an operator's (operator:<client>).
func IsOperatorOrigin(origin string) bool { return strings.HasPrefix(origin, RoleOperator+":") }

// IsPartnerOrigin reports whether origin is a partner's (partner:<client>).
func IsPartnerOrigin(origin string) bool { return strings.HasPrefix(origin, RolePartner+":") }
