//go:build kaiostages

package kaio

const stagesOn = true
