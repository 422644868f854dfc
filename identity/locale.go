package identity

import (
	"errors"

	"golang.org/x/text/language"

	"github.com/gatehouse/gatehouse/problem"
)

// The hosted sign-in speaks English and German: the language the app asks
// for (ui_locales), else the browser's (Accept-Language), else English.

// words are one language's texts of the sign-in pages, by key.
type words map[string]string

var pageLanguages = []language.Tag{language.English, language.German}

var pageMatcher = language.NewMatcher(pageLanguages)

var catalog = map[language.Tag]words{
	language.English: {
		"sign_in": "Sign in", "continue_to": "to continue to", "email": "Email address", "password": "Password",
		"asks_to": "asks to:", "allow": "Allow", "deny": "Deny", "allow_title": "Allow %s?",
		"failed": "Sign-in failed", "signed_out": "Signed out", "signed_out_text": "You are signed out. You can close this page.",
		"invalid_request": "The app's sign-in request is not valid:", "session_ended": "Your session has ended; sign in again.",
		"scope_openid": "Know who you are", "scope_profile": "See your name", "scope_email": "See your email address",
		"scope_offline_access": "Stay signed in while you are away",
		"forgot_link":          "Forgot your password?", "forgot_title": "Choose a new password", "send_link": "Send me a link",
		"forgot_text": "We will mail you a link to choose a new password.", "back": "Back to sign-in",
		"reset_sent":  "If this address has an account, a link to choose a new password is on its way. Sign in here once you have chosen it.",
		"signup_link": "Create an account", "signup_title": "Create an account", "name": "Your name", "create": "Create my account",
		"new_password_hint": "At least 12 characters; common or breached passwords are refused.",
		"signup_sent":       "Check your mail: confirm your address with the link we sent, then sign in here.",
		"sign_out_title":    "Sign out?", "sign_out_text": "Do you want to sign out of this organisation?", "sign_out": "Sign out",
		"terms": "Terms", "privacy": "Privacy",
		"account_title": "Your account", "change_password": "Change password", "current_password": "Current password",
		"new_password": "New password", "sessions": "Where you are signed in", "session_device": "Device", "session_last_seen": "Last seen",
		"session_action": "End", "this_session": "This browser", "end_session": "Sign out there",
		"password_changed": "Your password is changed, and every other session ended.", "session_ended_done": "That session is ended.",
	},
	language.German: {
		"sign_in": "Anmelden", "continue_to": "um fortzufahren zu", "email": "E-Mail-Adresse", "password": "Passwort",
		"asks_to": "möchte:", "allow": "Erlauben", "deny": "Ablehnen", "allow_title": "%s erlauben?",
		"failed": "Anmeldung fehlgeschlagen", "signed_out": "Abgemeldet", "signed_out_text": "Sie sind abgemeldet. Sie können diese Seite schließen.",
		"invalid_request": "Die Anmeldeanfrage der App ist ungültig:", "session_ended": "Ihre Sitzung ist beendet; bitte melden Sie sich erneut an.",
		"scope_openid": "Wissen, wer Sie sind", "scope_profile": "Ihren Namen sehen", "scope_email": "Ihre E-Mail-Adresse sehen",
		"scope_offline_access": "Angemeldet bleiben, während Sie nicht da sind",
		"forgot_link":          "Passwort vergessen?", "forgot_title": "Neues Passwort wählen", "send_link": "Link senden",
		"forgot_text": "Wir senden Ihnen einen Link, mit dem Sie ein neues Passwort wählen.", "back": "Zurück zur Anmeldung",
		"reset_sent":  "Falls diese Adresse ein Konto hat, ist ein Link zum Wählen eines neuen Passworts unterwegs. Melden Sie sich danach hier an.",
		"signup_link": "Konto erstellen", "signup_title": "Konto erstellen", "name": "Ihr Name", "create": "Konto erstellen",
		"new_password_hint": "Mindestens 12 Zeichen; häufige oder geleakte Passwörter werden abgelehnt.",
		"signup_sent":       "Sehen Sie in Ihr Postfach: Bestätigen Sie Ihre Adresse mit dem gesendeten Link und melden Sie sich dann hier an.",
		"sign_out_title":    "Abmelden?", "sign_out_text": "Möchten Sie sich von dieser Organisation abmelden?", "sign_out": "Abmelden",
		"terms": "Nutzungsbedingungen", "privacy": "Datenschutz",
		"account_title": "Ihr Konto", "change_password": "Passwort ändern", "current_password": "Aktuelles Passwort",
		"new_password": "Neues Passwort", "sessions": "Wo Sie angemeldet sind", "session_device": "Gerät", "session_last_seen": "Zuletzt aktiv",
		"session_action": "Beenden", "this_session": "Dieser Browser", "end_session": "Dort abmelden",
		"password_changed": "Ihr Passwort ist geändert, und alle anderen Sitzungen sind beendet.", "session_ended_done": "Diese Sitzung ist beendet.",
	},
}

// problemWords say, in German, what the errors the sign-in shows mean;
// other errors keep their English message.
var problemWords = map[problem.Code]string{
	problem.Unauthorized: "E-Mail-Adresse oder Passwort ist falsch.",
	problem.TooMany:      "Zu viele Versuche; bitte versuchen Sie es später erneut.",
	problem.Unavailable:  "Der Dienst ist gerade nicht erreichbar; bitte versuchen Sie es gleich erneut.",
	problem.NotFound:     "Diese Anmeldung ist abgelaufen oder beendet; kehren Sie zur App zurück und beginnen Sie erneut.",
	problem.Forbidden:    "Dieses Formular ist abgelaufen; kehren Sie zur App zurück und melden Sie sich erneut an.",
}

// pageLanguage picks the sign-in's language: the first of the app's
// ui_locales Gatehouse speaks, else the browser's Accept-Language.
func pageLanguage(uiLocales []string, acceptLanguage string) language.Tag {
	for _, l := range uiLocales {
		if t, err := language.Parse(l); err == nil {
			if _, i, c := pageMatcher.Match(t); c >= language.High {
				return pageLanguages[i]
			}
		}
	}
	tags, _, err := language.ParseAcceptLanguage(acceptLanguage)
	if err != nil || len(tags) == 0 {
		return language.English
	}
	_, i, c := pageMatcher.Match(tags...)
	if c == language.No {
		return language.English
	}
	return pageLanguages[i]
}

// errorText is err as the sign-in shows it in lang.
func errorText(lang language.Tag, err error) string {
	if lang != language.English {
		if w, ok := problemWords[problem.CodeOf(err)]; ok {
			return w
		}
	}
	return problem.MessageOf(err)
}

// fieldText is errorText for a form whose error may name a field: the
// field's rule, in English (its words are the service's).
func fieldText(lang language.Tag, err error) string {
	if e, ok := errors.AsType[*problem.Error](err); ok && len(e.Fields) > 0 {
		return fieldLabel(e.Fields[0].Field) + " " + e.Fields[0].Reason
	}
	return errorText(lang, err)
}
