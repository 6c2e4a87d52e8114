"""rules.quotes in the languages and clients real customers and CSRs use.

One row per case: (language, client, input, expected new text). The input is
the plain text of a reply as the client writes it; the expected text is what
the customer (or the CSR, for a customer's reply) must get: every new word,
no quoted one. ``bench/quotes_compare.py`` measures the same rows against
``quotequail`` and ``mail-parser-reply``.

Negatives are rows too: a CSR's own "From: our side, ..." or "I wrote: ..."
in the middle of the text must not cut it.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from rules.quotes import strip_quoted_text


class Row(NamedTuple):
    name: str
    language: str
    client: str
    text: str
    expected: str


Q = "\n> Wo ist mein Paket?\n> Danke\n"  # a quote, its language does not matter
ADDR = "Support <support@example.com>"

ROWS: list[Row] = [
    # -- attribution lines ---------------------------------------------------------
    Row("en_gmail", "en", "gmail",
        f"Your refund is on its way.\n\nOn Mon, 3 Jun 2024 at 10:15, {ADDR} wrote:\n{Q}",
        "Your refund is on its way."),
    Row("fr_gmail", "fr", "gmail",
        f"Votre colis arrive demain.\n\nLe lun. 3 juin 2024 à 10:15, {ADDR} a écrit :\n{Q}",
        "Votre colis arrive demain."),
    Row("fr_thunderbird", "fr", "thunderbird",
        f"C'est réglé.\n\nLe 03/06/2024 à 10:15, Support a écrit :\n{Q}",
        "C'est réglé."),
    Row("de_gmail", "de", "gmail",
        f"Ihr Paket ist unterwegs.\n\nAm Mo., 3. Juni 2024 um 10:15 Uhr schrieb {ADDR}:\n{Q}",
        "Ihr Paket ist unterwegs."),
    Row("de_thunderbird", "de", "thunderbird",
        f"Erledigt.\n\nAm 03.06.24 um 10:15 schrieb Support:\n{Q}",
        "Erledigt."),
    Row("it_gmail", "it", "gmail",
        f"Fatto.\n\nIn data lun 3 giu 2024 alle ore 10:15 {ADDR} ha scritto:\n{Q}",
        "Fatto."),
    Row("it_gmail_il_giorno", "it", "gmail",
        f"Fatto.\n\nIl giorno lun 3 giu 2024 alle ore 10:15 {ADDR} ha scritto:\n{Q}",
        "Fatto."),
    Row("es_gmail", "es", "gmail",
        f"Su pedido ya salió.\n\nEl lun, 3 jun 2024 a las 10:15, {ADDR} escribió:\n{Q}",
        "Su pedido ya salió."),
    Row("nl_gmail", "nl", "gmail",
        f"Gedaan.\n\nOp ma 3 jun. 2024 om 10:15 schreef {ADDR}:\n{Q}",
        "Gedaan."),
    Row("pl_thunderbird", "pl", "thunderbird",
        f"Paczka jest w drodze.\n\nW dniu 3.06.2024 o 10:15, Support pisze:\n{Q}",
        "Paczka jest w drodze."),
    Row("pl_gmail", "pl", "gmail",
        f"Gotowe.\n\npon., 3 cze 2024 o 10:15 {ADDR} napisał(a):\n{Q}",
        "Gotowe."),
    Row("pl_wp", "pl", "webmail",
        f"Dziękuję.\n\nDnia 3 czerwca 2024 10:15 Support <support@example.com> napisał(a):\n{Q}",
        "Dziękuję."),
    Row("da_apple", "da", "apple",
        f"Klaret.\n\nDen 3. jun. 2024 kl. 10.15 skrev {ADDR}:\n{Q}",
        "Klaret."),
    Row("sv_gmail", "sv", "gmail",
        f"Klart.\n\nDen mån 3 juni 2024 kl 10:15 skrev {ADDR}:\n{Q}",
        "Klart."),
    Row("ru_gmail", "ru", "gmail",
        f"Готово.\n\nпн, 3 июн. 2024 г. в 10:15, {ADDR}:\n{Q}",
        "Готово."),
    Row("ru_yandex_pishet", "ru", "yandex",
        f"Готово.\n\n03.06.2024, 10:15, \"Support\" <support@example.com> пишет:\n{Q}",
        "Готово."),
    Row("ru_mailru_napisal", "ru", "mail.ru",
        f"Спасибо.\n\nПонедельник, 3 июня 2024, 10:15 +03:00 от Support "
        f"<support@example.com>:\n{Q}",
        "Спасибо."),
    Row("ru_napisala", "ru", "thunderbird",
        f"Хорошо.\n\n03.06.2024 10:15, Анна Иванова написала:\n{Q}",
        "Хорошо."),
    Row("ru_napisal_a", "ru", "outlook",
        f"Хорошо.\n\n3 июня 2024 г., 10:15 пользователь {ADDR} написал(а):\n{Q}",
        "Хорошо."),
    Row("uk_pyshe", "uk", "ukr.net",
        f"Дякую.\n\n03.06.2024 10:15, Support <support@example.com> пише:\n{Q}",
        "Дякую."),
    Row("uk_napysav", "uk", "gmail",
        f"Готово.\n\nпн, 3 черв. 2024 о 10:15 {ADDR} написав:\n{Q}",
        "Готово."),
    Row("uk_napysala", "uk", "thunderbird",
        f"Готово.\n\n03.06.2024 о 10:15 Олена написала:\n{Q}",
        "Готово."),
    Row("zh_gmail", "zh", "gmail",
        f"已处理。\n\n{ADDR} 于2024年6月3日周一 10:15写道：\n{Q}",
        "已处理。"),
    Row("zh_qq", "zh", "qq",
        f"好的，谢谢。\n\n在 2024年6月3日 10:15，Support 写道：\n{Q}",
        "好的，谢谢。"),
    Row("ja_gmail", "ja", "gmail",
        f"承知しました。\n\n2024年6月3日(月) 10:15 {ADDR}:\n{Q}",
        "承知しました。"),
    Row("ja_thunderbird_message", "ja", "thunderbird",
        f"対応しました。\n\n2024/06/03 10:15 Support のメッセージ:\n{Q}",
        "対応しました。"),
    Row("ja_kakimashita", "ja", "apple",
        f"ありがとうございます。\n\n2024/06/03 10:15、Supportは書きました:\n{Q}",
        "ありがとうございます。"),
    Row("numeric_date_name_addr", "any", "mail.ru",
        f"Ok, thanks.\n\n30.09.2017, 18.30, \"Support\" <support@example.com>:\n{Q}",
        "Ok, thanks."),
    Row("en_wrapped_two_lines", "en", "gmail",
        "Done.\n\nOn Mon, Jun 3, 2024 at 10:15 AM Support Team of Example\n"
        f"<support@example.com> wrote:\n{Q}",
        "Done."),
    Row("fr_wrapped_two_lines", "fr", "gmail",
        "Merci.\n\nLe lun. 3 juin 2024 à 10:15, Support de l'exemple <\n"
        f"support@example.com> a écrit :\n{Q}",
        "Merci."),
    Row("de_wrapped_two_lines", "de", "gmail",
        "Danke.\n\nAm Mo., 3. Juni 2024 um 10:15 Uhr schrieb Support Team <\n"
        f"support@example.com>:\n{Q}",
        "Danke."),
    Row("zoho", "en", "zoho",
        f"Fixed now.\n\n---- On Mon, 01 Jan 2024 10:15:00 +0100 {ADDR} wrote ----\n\n"
        "Is it fixed?\n",
        "Fixed now."),
    Row("zoho_quoted", "en", "zoho",
        f"Fixed now.\n\n---- On Mon, 01 Jan 2024 10:15:00 +0100 {ADDR} wrote ----\n{Q}",
        "Fixed now."),
    Row("de_apple_unquoted_history", "de", "apple",
        f"Erledigt.\n\nAm 03.06.2024 um 10:15 schrieb {ADDR}:\n\nFrage ohne Zitatzeichen.\n",
        "Erledigt."),
    Row("pl_unquoted_history", "pl", "thunderbird",
        f"Gotowe.\n\nW dniu 3.06.2024 o 10:15, {ADDR} pisze:\n\nPytanie bez cytatu.\n",
        "Gotowe."),
    Row("de_zoho", "de", "zoho",
        f"Erledigt.\n\n---- Am Mo, 01 Jan 2024 10:15:00 +0100 schrieb {ADDR} ----\n\nFrage.\n",
        "Erledigt."),
    Row("fr_zoho", "fr", "zoho",
        f"Réglé.\n\n---- Le lun., 01 janv. 2024 10:15:00 +0100 {ADDR} a écrit ----\n\n"
        "Question.\n",
        "Réglé."),
    Row("de_gmail_schrieb_am", "de", "gmail",
        f"Danke.\n\n{ADDR} schrieb am Mo., 3. Juni 2024, 10:15:\n{Q}",
        "Danke."),
    Row("ko_gmail", "ko", "gmail",
        f"완료했습니다.\n\n2024년 6월 3일 (월) 오전 10:15, {ADDR}님이 작성:\n{Q}",
        "완료했습니다."),
    Row("en_thunderbird_original_message", "en", "thunderbird",
        "Ok.\n\n-------- Original Message --------\nSubject: Help\n"
        f"Date: Mon, 3 Jun 2024 10:15\nFrom: {ADDR}\nTo: Agent\n\nQuestion.\n",
        "Ok."),
    Row("cs_thunderbird_original_message", "cs", "thunderbird",
        f"Hotovo.\n\n-------- Původní zpráva --------\nOd: {ADDR}\nDatum: 3. 6. 2024 10:15\n"
        "Komu: Agent\nPředmět: Pomoc\n\nOtázka.\n",
        "Hotovo."),
    # -- Outlook header blocks, unquoted history below ------------------------------
    Row("en_outlook", "en", "outlook",
        f"Answer.\n\nFrom: {ADDR}\nSent: Monday, June 3, 2024 10:15 AM\nTo: Agent\n"
        "Subject: Help\n\nQuestion.\n",
        "Answer."),
    Row("de_outlook", "de", "outlook",
        f"Antwort.\n\nVon: {ADDR}\nGesendet: Montag, 3. Juni 2024 10:15\nAn: Agent\n"
        "Betreff: Hilfe\n\nFrage.\n",
        "Antwort."),
    Row("fr_outlook", "fr", "outlook",
        f"Réponse.\n\nDe : {ADDR}\nEnvoyé : lundi 3 juin 2024 10:15\nÀ : Agent\n"
        "Objet : Aide\n\nQuestion.\n",
        "Réponse."),
    Row("pl_outlook", "pl", "outlook",
        f"Odpowiedź.\n\nOd: {ADDR}\nWysłano: poniedziałek, 3 czerwca 2024 10:15\nDo: Agent\n"
        "Temat: Pomoc\n\nPytanie.\n",
        "Odpowiedź."),
    Row("zh_outlook", "zh", "outlook",
        f"已处理。\n\n发件人: {ADDR}\n发送时间: 2024年6月3日 10:15\n收件人: Agent\n"
        "主题: 帮助\n\n问题。\n",
        "已处理。"),
    Row("zh_outlook_fullwidth", "zh", "outlook",
        f"已处理。\n\n发件人：{ADDR}\n发送时间：2024年6月3日 10:15\n收件人：Agent\n"
        "主题：帮助\n\n问题。\n",
        "已处理。"),
    Row("es_outlook", "es", "outlook",
        f"Respuesta.\n\nDe: {ADDR}\nEnviado: lunes, 3 de junio de 2024 10:15\nPara: Agent\n"
        "Asunto: Ayuda\n\nPregunta.\n",
        "Respuesta."),
    Row("it_outlook", "it", "outlook",
        f"Risposta.\n\nDa: {ADDR}\nInviato: lunedì 3 giugno 2024 10:15\nA: Agent\n"
        "Oggetto: Aiuto\n\nDomanda.\n",
        "Risposta."),
    Row("nl_outlook", "nl", "outlook",
        f"Antwoord.\n\nVan: {ADDR}\nVerzonden: maandag 3 juni 2024 10:15\nAan: Agent\n"
        "Onderwerp: Hulp\n\nVraag.\n",
        "Antwoord."),
    Row("ru_outlook", "ru", "outlook",
        f"Ответ.\n\nОт: {ADDR}\nОтправлено: 3 июня 2024 г. 10:15\nКому: Agent\n"
        "Тема: Помощь\n\nВопрос.\n",
        "Ответ."),
    Row("uk_outlook", "uk", "outlook",
        f"Відповідь.\n\nВід: {ADDR}\nНадіслано: 3 червня 2024 р. 10:15\nКому: Agent\n"
        "Тема: Допомога\n\nПитання.\n",
        "Відповідь."),
    Row("ja_outlook", "ja", "outlook",
        f"回答です。\n\n差出人: {ADDR}\n送信日時: 2024年6月3日 10:15\n宛先: Agent\n"
        "件名: ヘルプ\n\n質問。\n",
        "回答です。"),
    Row("da_outlook", "da", "outlook",
        f"Svar.\n\nFra: {ADDR}\nSendt: 3. juni 2024 10:15\nTil: Agent\nEmne: Hjælp\n\n"
        "Spørgsmål.\n",
        "Svar."),
    Row("pt_outlook", "pt", "outlook",
        f"Resposta.\n\nDe: {ADDR}\nEnviada em: segunda-feira, 3 de junho de 2024 10:15\n"
        "Para: Agent\nAssunto: Ajuda\n\nPergunta.\n",
        "Resposta."),
    Row("de_outlook_underscores", "de", "outlook",
        f"Antwort.\n\n________________________________\nVon: {ADDR}\n"
        "Gesendet: Montag, 3. Juni 2024 10:15\nAn: Agent\nBetreff: Hilfe\n\nFrage.\n",
        "Antwort."),
    # -- "Original Message" separators ---------------------------------------------
    Row("en_original_message", "en", "outlook",
        f"Answer.\n\n-----Original Message-----\nFrom: {ADDR}\nSent: 3 June 2024 10:15\n"
        "To: Agent\nSubject: Help\n\nQuestion.\n",
        "Answer."),
    Row("de_original_message", "de", "outlook",
        f"Antwort.\n\n-----Ursprüngliche Nachricht-----\nVon: {ADDR}\n"
        "Gesendet: Montag, 3. Juni 2024 10:15\nAn: Agent\nBetreff: Hilfe\n\nFrage.\n",
        "Antwort."),
    Row("fr_original_message", "fr", "outlook",
        f"Réponse.\n\n-----Message d'origine-----\nDe : {ADDR}\nEnvoyé : lundi 3 juin 2024\n"
        "À : Agent\nObjet : Aide\n\nQuestion.\n",
        "Réponse."),
    Row("es_original_message", "es", "outlook",
        "Respuesta.\n\n-----Mensaje original-----\nDe: Support\nEnviado el: lunes\n"
        "Para: Agent\nAsunto: Ayuda\n\nPregunta.\n",
        "Respuesta."),
    Row("it_original_message", "it", "outlook",
        "Risposta.\n\n-----Messaggio originale-----\nDa: Support\nInviato: lunedì\n"
        "A: Agent\nOggetto: Aiuto\n\nDomanda.\n",
        "Risposta."),
    Row("nl_original_message", "nl", "outlook",
        "Antwoord.\n\n-----Oorspronkelijk bericht-----\nVan: Support\nVerzonden: maandag\n"
        "Aan: Agent\nOnderwerp: Hulp\n\nVraag.\n",
        "Antwoord."),
    Row("pl_original_message", "pl", "outlook",
        "Odpowiedź.\n\n-----Oryginalna wiadomość-----\nOd: Support\nWysłano: poniedziałek\n"
        "Do: Agent\nTemat: Pomoc\n\nPytanie.\n",
        "Odpowiedź."),
    Row("ru_original_message", "ru", "outlook",
        "Ответ.\n\n-----Исходное сообщение-----\nОт: Support\nОтправлено: 3 июня\n"
        "Кому: Agent\nТема: Помощь\n\nВопрос.\n",
        "Ответ."),
    Row("zimbra", "en", "zimbra",
        f"Noted.\n\n----- Original Message -----\nFrom: {ADDR}\nTo: \"Agent\" "
        "<agent@example.com>\nSent: Monday, June 3, 2024 10:15:00 AM\nSubject: Help\n\n"
        "Question.\n",
        "Noted."),
    Row("zimbra_es", "es", "zimbra",
        f"Anotado.\n\n----- Mensaje original -----\nDe: {ADDR}\nPara: Agent\n"
        "Enviado: lunes, 3 de junio de 2024 10:15:00\nAsunto: Ayuda\n\nPregunta.\n",
        "Anotado."),
    Row("zimbra_de", "de", "zimbra",
        f"Notiert.\n\n----- Ursprüngliche Mail -----\nVon: {ADDR}\nAn: Agent\n"
        "Gesendet: Montag, 3. Juni 2024 10:15:00\nBetreff: Hilfe\n\nFrage.\n",
        "Notiert."),
    Row("zimbra_fr", "fr", "zimbra",
        f"Noté.\n\n----- Mail original -----\nDe: {ADDR}\nÀ: Agent\n"
        "Envoyé: Lundi 3 Juin 2024 10:15:00\nObjet: Aide\n\nQuestion.\n",
        "Noté."),
    # -- negatives: a CSR's own words that look like a splitter -----------------------
    Row("neg_from_our_side", "en", "any",
        "Hello,\n\nFrom: our side, the fix is ready.\nTo: be sure, restart the app.\n\n"
        "It should work now.\n",
        "Hello,\n\nFrom: our side, the fix is ready.\nTo: be sure, restart the app.\n\n"
        "It should work now."),
    Row("neg_i_wrote", "en", "any",
        "As I wrote: the parcel left on Monday.\nYou will get it on Friday.\n",
        "As I wrote: the parcel left on Monday.\nYou will get it on Friday."),
    Row("neg_de_schrieb", "de", "any",
        "Wie ich schrieb: das Paket ist unterwegs.\nEs kommt am Freitag.\n",
        "Wie ich schrieb: das Paket ist unterwegs.\nEs kommt am Freitag."),
    Row("neg_pl_pisze", "pl", "any",
        "Klient pisze: paczka nie dotarła.\nSprawdzimy to jutro.\n",
        "Klient pisze: paczka nie dotarła.\nSprawdzimy to jutro."),
    Row("neg_od_do", "pl", "any",
        "Godziny pracy:\nOd: 8:00\nDo: 16:00\n\nZapraszamy.\n",
        "Godziny pracy:\nOd: 8:00\nDo: 16:00\n\nZapraszamy."),
    Row("neg_de_von_an", "de", "any",
        "Ihre Sendung:\nVon: Berlin\nAn: München\n\nViele Grüße\n",
        "Ihre Sendung:\nVon: Berlin\nAn: München\n\nViele Grüße"),
    Row("neg_subject_line", "en", "any",
        "Please write to us with\nSubject: refund\nand your order number.\n",
        "Please write to us with\nSubject: refund\nand your order number."),
    Row("neg_thanks_sign_off_kept", "en", "any",
        "Thanks,\nthe parcel arrived.\n\nBest regards,\nJane\n",
        "Thanks,\nthe parcel arrived.\n\nBest regards,\nJane"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_quote_detection(row: Row) -> None:
    assert strip_quoted_text(row.text) == row.expected


def test_rows_have_unique_names_and_cover_the_languages() -> None:
    assert len({r.name for r in ROWS}) == len(ROWS)
    languages = {r.language for r in ROWS}
    assert {"en", "de", "fr", "it", "es", "nl", "pl", "da", "sv", "ru", "uk", "zh", "ja", "ko",
            "cs"} <= languages
